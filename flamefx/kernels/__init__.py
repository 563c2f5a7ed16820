"""Backends: CUDA kernel sources and launchers, and the descriptors jit fuses from."""
