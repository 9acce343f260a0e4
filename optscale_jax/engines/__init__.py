"""Inference backends: sampling completions and scoring them with a PRM.

Heavy dependencies (torch, transformers, vllm, httpx) are imported only when an
engine is constructed.
"""

from .balancer import ServersUnavailableError
from .base import (
    DEFAULT_SYSTEM_PROMPT,
    Completion,
    Engine,
    EngineError,
    ModelNotFoundError,
    SampleRequest,
    Scorer,
    check_model_ref,
    check_requests,
    describe,
    model_identity,
)
from .openai import HTTPClient, OpenAIEngine, OpenAIPRM
from .prm import (
    AGGREGATIONS,
    PRM_SYSTEM_PROMPT,
    STEP_TOKEN,
    aggregate_step_scores,
    prm_messages,
    split_steps,
    step_probabilities,
)
from .transformers import TransformersEngine, TransformersPRM, make_tiny_models
from .vllm import VLLMPRM, VLLMEngine, import_vllm, step_scores_from_pooling

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_SYSTEM_PROMPT",
    "PRM_SYSTEM_PROMPT",
    "STEP_TOKEN",
    "Completion",
    "Engine",
    "EngineError",
    "HTTPClient",
    "ModelNotFoundError",
    "OpenAIEngine",
    "OpenAIPRM",
    "SampleRequest",
    "Scorer",
    "ServersUnavailableError",
    "TransformersEngine",
    "TransformersPRM",
    "VLLMEngine",
    "VLLMPRM",
    "aggregate_step_scores",
    "check_model_ref",
    "check_requests",
    "describe",
    "import_vllm",
    "make_tiny_models",
    "model_identity",
    "prm_messages",
    "split_steps",
    "step_probabilities",
    "step_scores_from_pooling",
]
