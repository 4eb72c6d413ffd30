"""`backend.name = "vllm"`: a colocated vLLM engine samples, the local torch + peft code trains."""
