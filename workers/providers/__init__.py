"""Provider adapters (OpenAI, Anthropic, Gemini, vLLM) behind one interface; the stand-in."""
