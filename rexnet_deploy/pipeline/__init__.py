"""The one-command pipeline (README's main job)."""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "PipelineConfig": ".run",
    "pipeline_suite": ".run",
    "run_pipeline": ".run",
})

__all__ = ["PipelineConfig", "pipeline_suite", "run_pipeline"]
