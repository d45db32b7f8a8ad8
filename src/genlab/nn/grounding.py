"""Token-level grounding: a loss that asks cross-attention to read each phrase of a caption where the thing it
names lies in the image.

For a phrase p and one cross-attention layer, a_p(x) is the attention that image position x gives the phrase's
tokens (softmax over the caption's tokens, averaged over heads, summed over the phrase's tokens). The loss is
(1 − Σ_{x in box} a_p(x) / Σ_x a_p(x))², averaged over phrases and layers: 0 when the phrase is read only inside
its box, 1/4 when it is read evenly from both halves of the image.

`pixel_grounding_loss` is TokenCompose's second term, L_pixel: at every position, the binary cross-entropy
between a_p(x) and the box (1 inside, 0 outside), averaged over positions, phrases and layers. The share above
can be 1 while positions in the box read mostly other tokens ("a", "to the left of", which in a contextual
encoder carry something of both nouns); this term asks positions in the box to read the phrase itself.

On two-item scenes ("a seven to the left of a two") the denoising loss rewards word order only weakly: a model
that knows which two digits to draw, but not which goes where, loses little (README, "Where order gets lost").
The grounding loss rewards it directly: the left half must read the phrase that the caption puts on the left.

Reference:
    Wang et al. 2024, "TokenCompose: Text-to-Image Diffusion with Token-level Supervision" (L_token and
        L_pixel, with segmentation masks of the nouns; boxes here)
"""

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F


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


def phrase_reads(attn: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The attention each position of a map (B, H, W, L) gives each phrase of `tokens` (B, P, L): (B, P, H, W)."""
    return torch.einsum("bhwl,bpl->bphw", attn.float(), tokens)


def inside_share(attn: torch.Tensor, tokens: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, P): the share of each phrase's reading in one map (B, H, W, L) that comes from inside its box."""
    read = phrase_reads(attn, tokens)
    inside = (read * box_masks(boxes, attn.shape[1], attn.shape[2])).sum((-2, -1))
    return inside / read.sum((-2, -1)).clamp_min(1e-12)


def box_read(attn: torch.Tensor, tokens: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, P): how much the positions inside each phrase's box read the phrase, on average, in one map."""
    box = box_masks(boxes, attn.shape[1], attn.shape[2])
    return (phrase_reads(attn, tokens) * box).sum((-2, -1)) / box.sum((-2, -1)).clamp_min(1)


def grounding_loss(maps: Sequence[torch.Tensor], tokens: torch.Tensor, boxes: torch.Tensor,
                   valid: torch.Tensor) -> torch.Tensor:
    """The mean of (1 − inside share)² over the valid phrases of every attention map (B, H, W, L) in `maps`
    (genlab.models.diffusion.unet.CrossAttention's), with `phrase_targets`' tokens, boxes and valid; 0 (with
    the graph) when there are none."""
    if not valid.any():
        return _no_phrases(maps, tokens)
    return torch.cat([(1 - inside_share(attn, tokens, boxes))[valid] ** 2 for attn in maps]).mean()


def pixel_grounding_loss(maps: Sequence[torch.Tensor], tokens: torch.Tensor, boxes: torch.Tensor,
                         valid: torch.Tensor) -> torch.Tensor:
    """The binary cross-entropy between what each position reads of each valid phrase and its box (1 inside,
    0 outside), averaged over positions, phrases and the maps; arguments as `grounding_loss`'s."""
    if not valid.any():
        return _no_phrases(maps, tokens)
    terms = []
    for attn in maps:
        read = phrase_reads(attn, tokens).clamp(1e-6, 1 - 1e-6)  # log's domain; a phrase's reads sum to ≤ 1
        box = box_masks(boxes, attn.shape[1], attn.shape[2])
        terms.append(F.binary_cross_entropy(read[valid], box[valid]))
    return torch.stack(terms).mean()


def _no_phrases(maps: Sequence[torch.Tensor], tokens: torch.Tensor) -> torch.Tensor:
    # Zero, still tied to the maps, so every rank's backward sees the same graph.
    return sum((m.sum() for m in maps), tokens.new_zeros(())) * 0
