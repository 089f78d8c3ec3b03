"""Co-simulation of RTL units against the integer golden model, bit for bit."""
