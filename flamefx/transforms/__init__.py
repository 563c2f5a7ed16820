"""The transforms, one module each: ad (vjp, grad, jvp, ...), batching (vmap), jit."""
