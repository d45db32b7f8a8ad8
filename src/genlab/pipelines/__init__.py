"""Inference-only compositions of genlab's parts (as diffusers' pipelines): text encoder + image model + sampler."""

from genlab.pipelines.text_to_image import TextToImageOutput, TextToImagePipeline

__all__ = ["TextToImageOutput", "TextToImagePipeline"]
