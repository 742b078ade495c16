"""The torch CPU engine: the llama forward pass, its paged KV cache and weight-product kernels."""
