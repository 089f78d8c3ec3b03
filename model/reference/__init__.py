"""The float PyTorch reference of Bi-Mamba: FBI-Linear, the Mamba-2 mixer and its block
(:mod:`.layer`), the byte-level language model (:mod:`.lm`), and their checkpoints: Bi-Mamba
state dicts (:mod:`.checkpoint`) and the shipped safetensors format (:mod:`.lm_checkpoint`)."""
