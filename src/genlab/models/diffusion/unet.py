"""The denoising U-Net of pixel-space diffusion models: ε_θ(x_t, t, c) (or v_θ, x₀_θ), images in, images out.

References:
    Ronneberger, Fischer & Brox 2015, "U-Net" (encoder, decoder, skip connections at every resolution)
    Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", Appendix B (the PixelCNN++-style U-Net:
        residual blocks with GroupNorm, sinusoidal timestep embedding added in every block, self-attention at
        the low resolutions, dropout)
    Nichol & Dhariwal 2021, "Improved DDPM" and Dhariwal & Nichol 2021, "Diffusion Models Beat GANs"
        (scale-shift conditioning of the second GroupNorm, zero-initialised residual branches, conditioning
        vectors added to the timestep embedding)
    Vaswani et al. 2017 (the sinusoidal embedding)
    Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models" (cross-attention from
        the U-Net's features to a text encoder's token states, after self-attention at the low resolutions)
    Hoogeboom, Heek & Salimans 2023, "simple diffusion" (§3: a pixel-space U-Net that starts by folding each
        patch of pixels into channels does the work of the low-resolution levels only, at a fraction of the cost)

    x (B, C, H, W) ─ conv 3×3 ─┬─ level 0: R × ResBlock ─ down ─ level 1 ... ─ level L−1: R × ResBlock [+ Attn]
                               │                                                          │
                               │                                      middle: ResBlock, Attn, ResBlock
                               │                                                          │
    out (B, C, H, W) ─ GN, SiLU, conv 3×3 (zero-init) ─ level 0: (R+1) × ResBlock(skip) ─ up ─ ... ─┘
    t (B,) ─ sinusoid ─ MLP ─┐
    c (B, D) or None ─ Linear ┴─ + = embedding e (B, 4·base), fed to every ResBlock
    tokens (B, L, context_dim) or None ─ keys and values of cross-attention wherever there is self-attention

Level i has base·channel_mult[i] channels at resolution H / 2^i; each downsampling halves H and W (a stride-2
conv), so the image size must be divisible by 2^(levels − 1): 28 → 14 → 7, 32 → 16 → 8, 64 → 32 → 16 → 8.
With `patch_size` p > 1 every p×p patch of pixels is folded into p² channels before the stem (pixel unshuffle)
and unfolded after the head (pixel shuffle): the U-Net runs at H / p, where a convolution costs p² times less
(48×48 scenes with p = 2: four times the images per second on a CPU), and still predicts every pixel.
Self-attention runs at the lowest `attention_levels` levels and in the middle. The conditioning input is a
vector (a class embedding, a pooled text embedding): it joins the timestep embedding, so any conditioner that
yields a vector drives the same network. With `context_dim`, every self-attention layer is followed by a
cross-attention layer over token states (a prompt's words), which lets each part of the image read the words
that concern it: the pooled vector alone cannot say which item goes where.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.nn.attention import attention


class TextContext(NamedTuple):
    """What cross-attention reads: token states (B, L, D) and their mask (B, L), True = a token; with `maps`, a
    list, each CrossAttention appends its attention map (B, H, W, L) (for genlab.nn.grounding)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    maps: list[torch.Tensor] | None = None


Context = TextContext | None


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoids of the timesteps (B,) at dim/2 geometrically spaced frequencies: (B, dim) = [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    # 32 groups as Ho et al., fewer for narrow layers so each group keeps at least 4 channels.
    groups = math.gcd(channels, max(1, min(32, channels // 4)))
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    # Residual branches start as the identity: a deep U-Net then trains stably from the first step.
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN, SiLU, conv; scale-shift of the second GN by the embedding; SiLU, dropout, conv; plus the input."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2, self.drop = group_norm(out_ch), nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: Context = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    """What both attention blocks share: heads that divide the width, a GroupNorm in, the block's own input
    projections, a zero-init 1×1 conv out (registered in this order, the order of the parameters), and with
    `size` a learned position embedding (C, size, size) added to the normalised input.

    Attention is blind to where a feature sits, and a convolution knows it only near the borders its receptive
    field reaches. The embedding tells each query its place, so that cross-attention might learn "the left half
    reads the word that the prompt puts on the left" once for every item rather than per pair of items
    (Dosovitskiy et al. 2021 and Peebles & Xie 2023 add one to every token for the same reason). It starts at
    zero: the block starts as without it."""

    def __init__(self, channels: int, heads: int, size: int | None = None, **projections: nn.Module):
        super().__init__()
        if channels % heads:
            raise ConfigError(f"attention over {channels} channels cannot be split into {heads} heads; "
                              "choose --attention-heads dividing every level's width")
        self.heads = heads
        self.norm = group_norm(channels)
        for name, layer in projections.items():
            self.add_module(name, layer)
        self.out = zero_init(nn.Conv2d(channels, channels, 1))
        self.position = nn.Parameter(torch.zeros(1, channels, size, size)) if size else None

    def normed(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return h if self.position is None else h + self.position


class SelfAttention(_Attention):
    """Multi-head self-attention over the H·W positions, as a residual block."""

    def __init__(self, channels: int, heads: int, size: int | None = None):
        super().__init__(channels, heads, size, qkv=nn.Conv2d(channels, 3 * channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, context: Context = None) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.normed(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        # Contiguous copies: on the CPU, SDPA over these transposed views runs several times slower (4.7× forward,
        # 1.9× forward + backward at 14×14, batch 32) than over the copies.
        h = attention(q.contiguous(), k.contiguous(), v.contiguous())  # (B, heads, H·W, C/heads)
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


class CrossAttention(_Attention):
    """Multi-head attention from the H·W positions (queries) to the L context tokens (keys, values), padding
    tokens masked out, as a residual block. Asked for its map (`TextContext.maps`), it also computes the softmax
    itself, in float32, averaged over heads: SDPA does not return it."""

    def __init__(self, channels: int, context_dim: int, heads: int, size: int | None = None):
        super().__init__(channels, heads, size, q=nn.Conv2d(channels, channels, 1),
                         kv=nn.Linear(context_dim, 2 * channels))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, context: Context = None) -> torch.Tensor:
        if context is None:
            raise ValueError("this U-Net was built with cross-attention; pass the context tokens")
        mask = context.mask[:, None, None, :]  # (B, 1, 1, L)
        B, C, H, W = x.shape
        q = self.q(self.normed(x)).reshape(B, self.heads, C // self.heads, H * W).transpose(-1, -2)  # (B, h, HW, c)
        k, v = self.kv(context.tokens).reshape(B, -1, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if context.maps is not None:
            with torch.autocast(x.device.type, enabled=False):
                scores = q.float() @ k.float().transpose(-1, -2) * (C // self.heads) ** -0.5
                probs = scores.masked_fill(~mask, float("-inf")).softmax(-1).mean(1)  # (B, HW, L)
            context.maps.append(probs.reshape(B, H, W, -1))
        h = attention(q.contiguous(), k.contiguous(), v.contiguous(), mask)  # as in SelfAttention
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, context: Context = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, context: Context = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.ModuleList):
    """Layers applied in order, each given the embedding and the context (each layer uses what concerns it)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: Context = None) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb, context)
        return x


def check_unet_shape(image_size: int, channel_mult: tuple[int, ...], patch_size: int = 1) -> None:
    if image_size % patch_size:
        raise ConfigError(f"--patch-size {patch_size} must divide the image size {image_size}")
    image_size //= patch_size
    factor = 2 ** (len(channel_mult) - 1)
    if image_size % factor:
        size = f"image size over --patch-size {patch_size}" if patch_size > 1 else "image size"
        raise ConfigError(f"a U-Net with {len(channel_mult)} levels halves the image {len(channel_mult) - 1} "
                          f"times, so the {size} must be a multiple of {factor}; {image_size} is not "
                          "(use fewer --channel-mult entries or --image-size 32)")


class UNet(nn.Module):
    """(x_t (B, C, H, W), t (B,), cond (B, cond_dim) or None, context (a TextContext) or None) → (B, C, H, W)."""

    def __init__(self, in_channels: int, image_size: int, base_channels: int = 64,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 2, attention_levels: int = 1,
                 attention_heads: int = 4, dropout: float = 0.1, cond_dim: int = 0, context_dim: int = 0,
                 position_embedding: bool = False, patch_size: int = 1):
        super().__init__()
        check_unet_shape(image_size, channel_mult, patch_size)
        self.patch_size = patch_size
        image_size //= patch_size
        in_channels *= patch_size**2
        widths = [base_channels * int(m) for m in channel_mult]
        levels = len(widths)
        emb_dim = 4 * base_channels
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_proj = nn.Linear(cond_dim, emb_dim) if cond_dim else None
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)

        def block(a: int, b: int, level: int) -> list[nn.Module]:
            layers: list[nn.Module] = [ResBlock(a, b, emb_dim, dropout)]
            if level >= levels - attention_levels:
                layers += attention_layers(b, level)
            return layers

        def attention_layers(width: int, level: int) -> list[nn.Module]:
            size = image_size >> level if position_embedding else None
            layers: list[nn.Module] = [SelfAttention(width, attention_heads, size)]
            if context_dim:
                layers.append(CrossAttention(width, context_dim, attention_heads, size))
            return layers

        # Encoder: every block's output is kept for the decoder (skip_widths tracks their channels).
        self.down = nn.ModuleList()
        skip_widths, ch = [widths[0]], widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(Stage(block(ch, width, level)))
                ch = width
                skip_widths.append(ch)
            if level < levels - 1:
                self.down.append(Stage([Downsample(ch)]))
                skip_widths.append(ch)
        self.middle = Stage([ResBlock(ch, ch, emb_dim, dropout), *attention_layers(ch, levels - 1),
                             ResBlock(ch, ch, emb_dim, dropout)])
        # Decoder: one more block per level than the encoder, each taking one skip connection.
        self.up = nn.ModuleList()
        for level in reversed(range(levels)):
            for i in range(num_res_blocks + 1):
                layers = block(ch + skip_widths.pop(), widths[level], level)
                ch = widths[level]
                if level > 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                self.up.append(Stage(layers))
        self.head = nn.Sequential(group_norm(ch), nn.SiLU(), zero_init(nn.Conv2d(ch, in_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                context: Context = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))  # (B, 4·base)
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("this U-Net was built for a conditioning vector; pass cond")
            emb = emb + self.cond_proj(cond)
        h = self.stem(F.pixel_unshuffle(x, self.patch_size))
        skips = [h]
        for stage in self.down:
            h = stage(h, emb, context)
            skips.append(h)
        h = self.middle(h, emb, context)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, context)
        return F.pixel_shuffle(self.head(h), self.patch_size)
