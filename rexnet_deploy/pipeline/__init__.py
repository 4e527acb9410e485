"""The one-command pipeline (README's main job)."""

from .run import PipelineConfig, pipeline_suite, run_pipeline

__all__ = ["PipelineConfig", "pipeline_suite", "run_pipeline"]
