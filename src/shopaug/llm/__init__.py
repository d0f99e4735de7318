"""Text generators behind one :class:`Generator` protocol: templates (no model), any
OpenAI-compatible endpoint, and a local GGUF model through llama.cpp."""

from shopaug.llm.base import Generator, GeneratorError
from shopaug.llm.llama_cpp import LlamaCppGenerator
from shopaug.llm.openai_compatible import OpenAICompatibleGenerator
from shopaug.llm.registry import GENERATORS, GeneratorConfig, build_generator
from shopaug.llm.template import TemplateGenerator

__all__ = [
    "GENERATORS",
    "Generator",
    "GeneratorConfig",
    "GeneratorError",
    "LlamaCppGenerator",
    "OpenAICompatibleGenerator",
    "TemplateGenerator",
    "build_generator",
]
