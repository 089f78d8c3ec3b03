/* The two LZ4 entry points Verilator's FST writer (fstcpp_writer.cpp) calls, declared as in
 * LZ4's own lz4.h (BSD-2-Clause, stable ABI since 1.7). The definitions come from the system's
 * runtime liblz4.so.1; machines without the lz4 development package have no lz4.h to include. */
#ifndef BIMAMBA_LZ4_SHIM_H
#define BIMAMBA_LZ4_SHIM_H
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);
#ifdef __cplusplus
}
#endif
#endif
