"""Token-level grounding: a loss that asks cross-attention to read each phrase of a caption where the thing it
names lies in the image.

For a phrase p and one cross-attention layer, a_p(x) is the attention that image position x gives the phrase's
tokens (softmax over the caption's tokens, averaged over heads, summed over the phrase's tokens). The loss is
(1 − Σ_{x in box} a_p(x) / Σ_x a_p(x))², averaged over phrases and layers: 0 when the phrase is read only inside
its box, 1/4 when it is read evenly from both halves of the image.

On two-item scenes ("a seven to the left of a two") the denoising loss rewards word order only weakly: a model
that knows which two digits to draw, but not which goes where, loses little (README, "Where order gets lost").
The grounding loss rewards it directly: the left half must read the phrase that the caption puts on the left.

Reference:
    Wang et al. 2024, "TokenCompose: Text-to-Image Diffusion with Token-level Supervision" (L_token, with
        segmentation masks of the nouns; boxes here)
"""

from collections.abc import Sequence
from typing import Protocol

import torch


class Phrase(Protocol):
    """What grounds a phrase (genlab.data.captions.GroundedPhrase): characters [start, end) of the caption, and a
    box (top, left, bottom, right) in fractions of the image."""

    start: int
    end: int
    box: tuple[float, float, float, float]


class SpanTokenizer(Protocol):
    def span_tokens(self, prompt: str, start: int, end: int) -> list[int]: ...


def phrase_targets(tokenizer: SpanTokenizer, prompts: Sequence[str], phrases: Sequence[Sequence[Phrase]],
                   length: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens (B, P, L): 1 at each phrase's token positions, boxes (B, P, 4), valid (B, P)) for B prompts of
    `length` tokens and their grounded phrases (P: the most any prompt has; a prompt may have none)."""
    width = max((len(p) for p in phrases), default=0)
    tokens = torch.zeros(len(prompts), width, length)
    boxes = torch.zeros(len(prompts), width, 4)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool)
    for b, (prompt, grounded) in enumerate(zip(prompts, phrases, strict=True)):
        for i, phrase in enumerate(grounded):
            positions = tokenizer.span_tokens(prompt, phrase.start, phrase.end)  # within the prompt's row
            if positions:
                tokens[b, i, positions] = 1.0
                boxes[b, i] = torch.tensor(phrase.box)
                valid[b, i] = True
    return tokens.to(device), boxes.to(device), valid.to(device)


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 4) boxes (top, left, bottom, right; fractions) -> (..., height, width) masks: 1 where a position's
    centre lies in the box."""
    rows = (torch.arange(height, device=boxes.device) + 0.5) / height
    cols = (torch.arange(width, device=boxes.device) + 0.5) / width
    inside_rows = (rows >= boxes[..., 0:1]) & (rows < boxes[..., 2:3])  # (..., height)
    inside_cols = (cols >= boxes[..., 1:2]) & (cols < boxes[..., 3:4])  # (..., width)
    return (inside_rows[..., :, None] & inside_cols[..., None, :]).float()


def grounding_loss(maps: Sequence[torch.Tensor], tokens: torch.Tensor, boxes: torch.Tensor,
                   valid: torch.Tensor) -> torch.Tensor:
    """The mean of (1 − inside share)² over the valid phrases of every attention map (B, H, W, L) in `maps`
    (genlab.models.diffusion.unet.CrossAttention's), with `phrase_targets`' tokens, boxes and valid; 0 (with
    the graph) when there are none."""
    terms = []
    for attn in maps:
        read = torch.einsum("bhwl,bpl->bphw", attn.float(), tokens)  # attention each position gives each phrase
        inside = (read * box_masks(boxes, attn.shape[1], attn.shape[2])).sum((-2, -1))
        share = inside / read.sum((-2, -1)).clamp_min(1e-12)
        terms.append((1 - share)[valid] ** 2)
    if not valid.any():  # zero, still tied to the maps, so every rank's backward sees the same graph
        return sum((m.sum() for m in maps), tokens.new_zeros(())) * 0
    return torch.cat(terms).mean()
