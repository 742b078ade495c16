"""Model files to engines: GGUF and safetensors weights, config, tokenizer, chat template."""
