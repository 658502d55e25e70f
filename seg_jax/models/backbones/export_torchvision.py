"""python -m seg_jax.models.backbones.export_torchvision vgg16 vgg16.safetensors

Writes torchvision's ImageNet weights of one architecture (vgg16, vgg16_bn, resnet50, resnet101) as a
`.safetensors` state dict that `load_pretrained` and `config.model.pretrained` read without torch. Run it once on a
machine with internet and torchvision; it downloads through torchvision's own cache (`TORCH_HOME`). seg_jax never
downloads weights itself.

    --weights DEFAULT   torchvision's weights enum member (DEFAULT = the best published, e.g. IMAGENET1K_V2)

Use `norm="batch"` (FCN: `--config.model.norm=batch --config.model.fc_norm=False`) for vgg16_bn, and
`--config.model.fc6_kernel=7` for FCN on either VGG.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from seg_jax.models.backbones.weights_file import write_safetensors

ARCHITECTURES = ("vgg16", "vgg16_bn", "resnet50", "resnet101")


def torchvision_state_dict(architecture: str, *, weights: str = "DEFAULT") -> dict[str, np.ndarray]:
    """torchvision's `architecture` with `weights` (downloaded by torchvision) as NumPy arrays by state-dict key."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    try:
        import torchvision  # only here: seg_jax itself never needs it
    except ImportError:
        raise SystemExit("export_torchvision needs torch and torchvision: pip install torch torchvision") from None
    model = torchvision.models.get_model(architecture, weights=weights)
    return {key: tensor.detach().cpu().numpy() for key, tensor in model.state_dict().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("architecture", choices=ARCHITECTURES)
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument("--weights", default="DEFAULT", help="torchvision weights name (default: DEFAULT)")
    args = parser.parse_args(argv)
    if not args.output.endswith(".safetensors"):
        parser.error(f"output {args.output!r} must end in .safetensors")
    state = torchvision_state_dict(args.architecture, weights=args.weights)
    write_safetensors(args.output, state, metadata={"source": f"torchvision {args.architecture} {args.weights}"})
    print(f"wrote {len(state)} tensors of torchvision {args.architecture} ({args.weights}) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
