"""Model servers that Agora's deployment templates run: ``openai_server`` is the built-in
OpenAI-compatible server for CPU nodes (transformers causal LMs and sentence-transformers
embedding models); GPU nodes run vLLM through the ``vllm`` template instead."""
