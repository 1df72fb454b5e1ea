"""Provider adapters (OpenAI, Anthropic, vLLM) behind one small interface, and the local stand-in."""
