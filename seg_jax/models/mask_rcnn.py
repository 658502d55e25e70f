"""Mask R-CNN (He et al. 2017) with a ResNet-FPN backbone, static shapes throughout, for `jit` and `pmap`.

Unlike the semantic models (``task = "detection"``), its ``__call__`` returns detections, not per-pixel logits:

    variables = model.init(key, images)                       # images float32 [B, H, W, 3]
    detections = model.apply(variables, images)               # inference: boxes, scores, classes, valid, masks
    terms, updates = model.apply(variables, images, targets, key=key, method=model.loss_terms,
                                 mutable=["batch_stats"])     # training: the five loss terms

``targets`` holds the padded ground truth of `seg_jax.data.instances_to_targets`: boxes float32
``[B, G, 4]``, classes int32 ``[B, G]``, masks uint8 ``[B, G, H, W]``, valid bool ``[B, G]``. Classes count the
background: class 0 is background and ``num_classes`` is the dataset's, as for the semantic models.

Pipeline: ResNet (`seg_jax.models.backbones`: the CPU-sized basic-block "resnet", or torchvision's "resnet50" /
"resnet101") → FPN (P2.. for the RoI heads, plus P_top+1 for the RPN with ``rpn_extra_level``) → RPN over
anchors → proposals (decode, clip, per-level top-k, per-level NMS to a fixed count with a validity mask, no
gradient: the paper's approximate joint training) → RoIAlign from the FPN level of each box's size → box head and
mask head. Training samples anchors and RoIs (`seg_jax.ops.rpn_targets`, `sample_rois`, `mask_targets`) and the
mask loss reads only each RoI's ground-truth-class mask. Inference: score threshold, per-class NMS, the top
``max_detections``, masks pasted back at full resolution.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from seg_jax import losses, ops
from seg_jax.models.backbones import create_backbone
from seg_jax.models.backbones.resnet import STAGE_WIDTHS
from seg_jax.models.detection_heads import BoxHead, MaskHead, RPNHead, paste_masks
from seg_jax.models.factory import MODELS
from seg_jax.models.fpn import FPN
from seg_jax.models.layers import pad_to_multiple

Array = jax.Array
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # delta coding of the RPN (torchvision, Detectron2)
ROI_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # and of the box head
LOSS_TERMS = ("rpn_objectness", "rpn_box", "class", "box", "mask")


def _boxes_big_enough(boxes: Array, min_size: float) -> Array:
    return (boxes[..., 2] - boxes[..., 0] >= min_size) & (boxes[..., 3] - boxes[..., 1] >= min_size)


def propose(objectness: Sequence[Array], deltas: Sequence[Array], anchors: Sequence[Array], *,
            image_size: tuple[int, int], pre_nms_top_n: int, post_nms_top_n: int, nms_iou: float,
            min_size: float = 1e-3) -> tuple[Array, Array, Array]:
    """RPN proposals of one image, as torchvision's ``RegionProposalNetwork.filter_proposals``.

    Per level: the ``pre_nms_top_n`` highest-scoring anchors, their boxes decoded and clipped to the image; then
    NMS within each level, and the ``post_nms_top_n`` best of all levels by score. Boxes narrower or lower than
    ``min_size`` pixels are dropped.

    Args:
      objectness: per level, logits ``[A_l]``; deltas: per level ``[A_l, 4]``; anchors: per level ``[A_l, 4]``.
      image_size: (height, width) in pixels, for clipping.
    Returns:
      ``(boxes [P, 4], logits [P], valid [P] bool)``, P = ``post_nms_top_n``, by decreasing objectness; boxes carry no
      gradient.
    """
    boxes, scores, levels = [], [], []
    for level, (logits, level_deltas, level_anchors) in enumerate(zip(objectness, deltas, anchors)):
        top, index = jax.lax.top_k(logits, min(pre_nms_top_n, logits.shape[0]))
        decoded = ops.decode_boxes(level_deltas[index], jnp.asarray(level_anchors)[index], weights=RPN_WEIGHTS)
        boxes.append(ops.clip_boxes(decoded, *image_size))
        scores.append(top)
        levels.append(jnp.full(top.shape, level, jnp.int32))
    boxes, scores, levels = (jnp.concatenate(x) for x in (boxes, scores, levels))
    boxes = jax.lax.stop_gradient(boxes)
    keep, valid = ops.batched_nms(boxes, scores, levels, iou_threshold=nms_iou, max_output_size=post_nms_top_n,
                                  valid=_boxes_big_enough(boxes, min_size))
    return boxes[keep], scores[keep], valid


def detect(class_logits: Array, box_deltas: Array, proposals: Array, proposal_valid: Array, *,
           image_size: tuple[int, int], score_threshold: float, nms_iou: float, max_detections: int,
           min_size: float = 1e-2) -> dict[str, Array]:
    """Final detections of one image, as torchvision's ``RoIHeads.postprocess_detections``.

    Every (proposal, foreground class) pair is a candidate: its class-specific box decoded and clipped, scored by
    the softmax probability of the class. Candidates above ``score_threshold`` go through NMS within each class and
    the ``max_detections`` best are kept.

    Args:
      class_logits: ``[P, C]`` (class 0 background); box_deltas: ``[P, C, 4]``; proposals: ``[P, 4]`` pixels with
        ``proposal_valid [P]`` bool.
    Returns:
      ``boxes`` float32 ``[K, 4]`` pixels, ``scores`` float32 ``[K]``, ``classes`` int32 ``[K]`` (≥ 1), ``valid`` bool
      ``[K]``, K = ``max_detections``, by decreasing score; invalid slots are zero.
    """
    num_classes = class_logits.shape[-1]
    scores = jax.nn.softmax(class_logits, axis=-1)[:, 1:]  # [P, C-1]
    boxes = ops.decode_boxes(box_deltas[:, 1:], proposals[:, None, :], weights=ROI_WEIGHTS)
    boxes = ops.clip_boxes(boxes, *image_size).reshape(-1, 4)
    classes = jnp.broadcast_to(jnp.arange(1, num_classes, dtype=jnp.int32), scores.shape).reshape(-1)
    scores = scores.reshape(-1)
    candidate = (jnp.repeat(proposal_valid, num_classes - 1) & (scores > score_threshold)
                 & _boxes_big_enough(boxes, min_size))
    keep, valid = ops.batched_nms(boxes, scores, classes, iou_threshold=nms_iou, max_output_size=max_detections,
                                  valid=candidate)
    return {"boxes": jnp.where(valid[:, None], boxes[keep], 0.0), "scores": jnp.where(valid, scores[keep], 0.0),
            "classes": jnp.where(valid, classes[keep], 0), "valid": valid}


@MODELS.register("mask_rcnn")
class MaskRCNN(nn.Module):
    """Mask R-CNN; see the module docstring for the calls.

    Defaults are sized for ~96 px images on a CPU (e.g. `shapes`); the paper's values, for ~800 px images, are
    noted where they differ in kind (its widths are 64..512 for the backbone, 256 for FPN and mask head, 1024 for the
    box head).

    Attributes:
        num_classes: N, including background (class 0).
        backbone_name: "resnet" (basic blocks, sized by backbone_depths / backbone_widths), "resnet50" or
            "resnet101" (torchvision's bottleneck ResNets, which `model.pretrained` can load; use norm="batch").
        backbone_depths, backbone_widths: "resnet"'s basic blocks and channels per stage (unused by the others);
            stage s feeds FPN level s + 2.
        fpn_width: channels of every FPN level.
        rpn_extra_level: add P_{top+1} (stride-2 subsample of the top level) for the RPN only.
        anchor_sizes: per RPN level, anchor sizes (sqrt of area, pixels); one entry per RPN level.
        aspect_ratios: anchor height / width ratios, shared by all levels.
        rpn_samples, rpn_positive_fraction, rpn_positive_iou, rpn_negative_iou: RPN anchor labelling and sampling.
        rpn_pre_nms_top_n: anchors kept per level before NMS (2000 in the paper; its cost grows fast past ~500
            candidates over all levels on CPU); rpn_post_nms_top_n: P, proposals per image.
        rpn_nms_iou: NMS IoU threshold of proposals.
        roi_samples, roi_positive_fraction, roi_foreground_iou: box-head RoI sampling per image (512, 0.25, 0.5 in
            the paper); the mask head trains on the int(roi_samples · roi_positive_fraction) foreground slots.
        roi_canonical_size: box size (pixels) pooled from FPN level 4 (224 in the FPN paper for ImageNet-sized
            objects; the default 48 is the level-4 anchor size of the default anchors).
        box_pool_size: RoIAlign output of the box head (7 in the paper); box_head_width: its fully connected width.
        mask_size: M, mask resolution (28 in the paper; RoIAlign pools M / 2, the transposed conv doubles it).
        mask_head_convs, mask_head_width: the mask head's 3×3 convs (4 × 256 in the paper; they dominate the CPU
            step time).
        score_threshold, detection_nms_iou, max_detections: inference post-processing; K = max_detections.
        norm, norm_axis_name, dtype: the backbone's normalisation (`seg_jax.models.layers.NORMS`), BatchNorm's
            pmap axis, and the compute dtype (parameters, losses and outputs stay float32).
        freeze_bn: the backbone's BatchNorm uses its running statistics, never updated (detectron2's FrozenBN).
    """
    task: ClassVar[str] = "detection"  # not a per-pixel semantic model: __call__ returns detections

    num_classes: int
    backbone_name: str = "resnet"
    backbone_depths: Sequence[int] = (1, 1, 1, 1)
    backbone_widths: Sequence[int] = (16, 32, 64, 128)
    fpn_width: int = 32
    rpn_extra_level: bool = False
    anchor_sizes: Sequence[Sequence[float]] = ((12,), (24,), (48,), (96,))
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    rpn_samples: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    rpn_pre_nms_top_n: int = 150
    rpn_post_nms_top_n: int = 100
    rpn_nms_iou: float = 0.7
    roi_samples: int = 64
    roi_positive_fraction: float = 0.25
    roi_foreground_iou: float = 0.5
    roi_canonical_size: float = 48.0
    box_pool_size: int = 7
    box_head_width: int = 128
    mask_size: int = 28
    mask_head_convs: int = 2
    mask_head_width: int = 16
    score_threshold: float = 0.05
    detection_nms_iou: float = 0.5
    max_detections: int = 32
    norm: str = "group"
    freeze_bn: bool = False
    norm_axis_name: str | None = None
    dtype: Any = jnp.float32

    def backbone_config(self) -> tuple[str, dict[str, Any]]:
        """(name, options) of the backbone: `create_backbone(name, **options)`, `load_pretrained(path, name, ...)`."""
        options = dict(norm=self.norm, freeze_bn=self.freeze_bn, norm_axis_name=self.norm_axis_name, dtype=self.dtype)
        if self.backbone_name == "resnet":
            options.update(depths=tuple(self.backbone_depths), widths=tuple(self.backbone_widths))
        return self.backbone_name, options

    @property
    def num_levels(self) -> int:
        """Backbone stages after the stem: they give C2.. and the FPN levels P2.."""
        return len(self.backbone_widths) if self.backbone_name == "resnet" else len(STAGE_WIDTHS)

    @property
    def input_multiple(self) -> int:
        """Pixels its input sides are zero-padded to: the stride of the coarsest backbone stage."""
        return 2 ** (self.num_levels + 1)

    def setup(self) -> None:
        num_rpn_levels = self.num_levels + int(self.rpn_extra_level)
        if len(self.anchor_sizes) != num_rpn_levels:
            raise ValueError(f"MaskRCNN: anchor_sizes has {len(self.anchor_sizes)} entries but the RPN has "
                             f"{num_rpn_levels} levels (one per backbone stage, plus one with rpn_extra_level)")
        if len({len(sizes) for sizes in self.anchor_sizes}) != 1:
            raise ValueError(f"MaskRCNN: every level of anchor_sizes={self.anchor_sizes} needs the same number of "
                             "sizes (the RPN head predicts a fixed number of anchors per cell)")
        if self.mask_size % 2:
            raise ValueError(f"MaskRCNN: mask_size={self.mask_size} must be even (RoIAlign pools mask_size / 2)")
        backbone, options = self.backbone_config()
        self.backbone = create_backbone(backbone, **options)
        self.fpn = FPN(self.fpn_width, extra_level=self.rpn_extra_level, dtype=self.dtype)
        self.rpn_head = RPNHead(len(self.anchor_sizes[0]) * len(self.aspect_ratios), dtype=self.dtype)
        self.box_head = BoxHead(self.num_classes, self.box_head_width, dtype=self.dtype)
        self.mask_head = MaskHead(self.num_classes, self.mask_head_convs, self.mask_head_width, dtype=self.dtype)

    # ------------------------------------------------------------------------------------------ shared stages
    def _pyramid(self, images: Array, *, train: bool) -> tuple[list[Array], list[Array]]:
        """(RoI-head levels P2.., RPN levels) of images padded at the bottom/right to a multiple of the top stride."""
        padded = pad_to_multiple(images, self.input_multiple)
        features = self.backbone(padded, train=train)
        levels = self.fpn([features[f"C{level}"] for level in range(2, self.num_levels + 2)])
        return levels[:self.num_levels], levels

    def _anchors(self, rpn_levels: Sequence[Array]) -> list:
        return ops.generate_anchors(feature_sizes=[level.shape[1:3] for level in rpn_levels],
                                    strides=[2 ** (2 + i) for i in range(len(rpn_levels))],
                                    sizes=self.anchor_sizes, aspect_ratios=self.aspect_ratios)

    def _rpn(self, rpn_levels: list[Array], image_size: tuple[int, int]):
        """Objectness logits [B, A], deltas [B, A, 4], anchors [A, 4] and proposals (boxes [B, P, 4], valid [B, P])."""
        logits, deltas = self.rpn_head(rpn_levels)
        anchors = self._anchors(rpn_levels)
        boxes, _, valid = jax.vmap(lambda o, d: propose(
            o, d, anchors, image_size=image_size, pre_nms_top_n=self.rpn_pre_nms_top_n,
            post_nms_top_n=self.rpn_post_nms_top_n, nms_iou=self.rpn_nms_iou))(logits, deltas)
        return (jnp.concatenate(logits, axis=1), jnp.concatenate(deltas, axis=1), jnp.concatenate(anchors),
                boxes, valid)

    def _pool(self, levels: list[Array], boxes: Array, size: int) -> Array:
        return ops.multilevel_roi_align(levels, boxes, output_size=size, min_level=2,
                                        canonical_size=self.roi_canonical_size)

    # ------------------------------------------------------------------------------------------ training
    def loss_terms(self, images: Array, targets: dict[str, Array], *, key: Array, train: bool = True,
                   axis_name: str | None = None) -> dict[str, Array]:
        """The five Mask R-CNN losses of a batch, float32 scalars keyed by `LOSS_TERMS`.

        Args:
          images: float ``[B, H, W, 3]``.
          targets: ground truth (module docstring): boxes ``[B, G, 4]``, classes ``[B, G]``, masks ``[B, G, H, W]``,
            valid ``[B, G]``.
          key: PRNG key for sampling anchors and RoIs.
          axis_name: pmap axis: losses are then normalised over the global batch (`seg_jax.losses.detection`).
        """
        height, width = images.shape[1:3]
        gt_boxes, gt_valid = targets["boxes"].astype(jnp.float32), targets["valid"].astype(bool)
        roi_levels, rpn_levels = self._pyramid(images, train=train)
        logits, deltas, anchors, proposals, proposal_valid = self._rpn(rpn_levels, (height, width))
        rpn_keys, roi_keys = jax.random.split(key, (2, images.shape[0]))  # one key per image and stage
        rpn = jax.vmap(lambda k, b, v: ops.rpn_targets(
            k, anchors, b, v, num_samples=self.rpn_samples, positive_fraction=self.rpn_positive_fraction,
            positive_iou=self.rpn_positive_iou, negative_iou=self.rpn_negative_iou))(
            rpn_keys, gt_boxes, gt_valid)
        rois = jax.vmap(lambda k, p, pv, b, c, v: ops.sample_rois(
            k, p, pv, b, c, v, num_samples=self.roi_samples, positive_fraction=self.roi_positive_fraction,
            foreground_iou=self.roi_foreground_iou, background_iou=self.roi_foreground_iou))(
            roi_keys, proposals, proposal_valid, gt_boxes, targets["classes"], gt_valid)

        class_logits, box_deltas = self.box_head(self._pool(roi_levels, rois["rois"], self.box_pool_size))
        # sample_rois puts the foreground first, so the mask head needs only the first num_fg slots.
        num_fg = int(self.roi_samples * self.roi_positive_fraction)
        fg = {k: v[:, :num_fg] for k, v in rois.items()}
        mask_logits = self.mask_head(self._pool(roi_levels, fg["rois"], self.mask_size // 2))
        mask_truth = jax.vmap(lambda m, r, g: ops.mask_targets(m, r, g, mask_size=self.mask_size))(
            targets["masks"], fg["rois"], fg["matched_gt"])
        return {
            "rpn_objectness": losses.rpn_objectness_loss(logits, rpn["objectness"], weights=rpn["weights"],
                                                         axis_name=axis_name),
            "rpn_box": losses.rpn_box_loss(deltas, rpn["box_targets"], rpn["objectness"], weights=rpn["weights"],
                                           axis_name=axis_name),
            "class": losses.class_loss(class_logits, rois["classes"], weights=rois["weights"], axis_name=axis_name),
            "box": losses.box_regression_loss(box_deltas, rois["box_targets"], rois["classes"],
                                              weights=rois["weights"], axis_name=axis_name),
            "mask": losses.mask_loss(mask_logits, mask_truth, fg["classes"], weights=fg["weights"],
                                     axis_name=axis_name),
        }

    # ------------------------------------------------------------------------------------------ inference
    def __call__(self, images: Array, *, train: bool = False) -> dict[str, Array]:
        """Detections of images float ``[B, H, W, 3]`` (K = ``max_detections``, by decreasing score):

        ``boxes`` float32 ``[B, K, 4]`` pixels, ``scores`` float32 ``[B, K]``, ``classes`` int32 ``[B, K]`` (≥ 1),
        ``valid`` bool ``[B, K]``, ``masks`` float32 ``[B, K, H, W]`` — each detection's class mask probability
        pasted into the image (threshold at 0.5 for a binary mask). Invalid slots are all zero. While `init` runs it,
        it only creates the parameters and returns an empty dict.
        """
        height, width = images.shape[1:3]
        roi_levels, rpn_levels = self._pyramid(images, train=train)
        if self.is_initializing():  # `init` needs only parameter shapes: skip proposals and NMS (slow to compile)
            self.rpn_head(rpn_levels)
            self.box_head(self._pool(roi_levels, jnp.zeros((images.shape[0], 1, 4)), self.box_pool_size))
            self.mask_head(self._pool(roi_levels, jnp.zeros((images.shape[0], 1, 4)), self.mask_size // 2))
            return {}
        _, _, _, proposals, proposal_valid = self._rpn(rpn_levels, (height, width))
        class_logits, box_deltas = self.box_head(self._pool(roi_levels, proposals, self.box_pool_size))
        detections = jax.vmap(lambda c, d, p, v: detect(
            c, d, p, v, image_size=(height, width), score_threshold=self.score_threshold,
            nms_iou=self.detection_nms_iou, max_detections=self.max_detections))(
            class_logits, box_deltas, proposals, proposal_valid)
        mask_logits = self.mask_head(self._pool(roi_levels, detections["boxes"], self.mask_size // 2))
        index = jnp.broadcast_to(detections["classes"][:, :, None, None, None], (*mask_logits.shape[:-1], 1))
        probabilities = jax.nn.sigmoid(jnp.take_along_axis(mask_logits, index, axis=-1)[..., 0])
        masks = jax.vmap(lambda m, b: paste_masks(m, b, height=height, width=width))(probabilities,
                                                                                     detections["boxes"])
        return {**detections, "masks": masks * detections["valid"][:, :, None, None]}
