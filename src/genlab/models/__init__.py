"""Every model family; importing this package registers them all (see genlab.registry)."""

import genlab.models.diffusion.ddpm  # noqa: F401
import genlab.models.gan.adversarial  # noqa: F401
import genlab.models.lm.rnn  # noqa: F401
import genlab.models.lm.transformer  # noqa: F401
import genlab.models.ngram.model  # noqa: F401
import genlab.models.vae.vae  # noqa: F401
