"""Mask R-CNN training targets with static shapes: anchor labels, balanced sampling, RoI and mask targets.

Every function works on ONE image with padded ground truth (``gt_valid [G]`` marks the real instances, G ≥ 1);
``jax.vmap`` it over the batch with one PRNG key per image. Ground-truth classes are 1..C−1; 0 is background.
Defaults are those of torchvision's and Detectron2's Mask R-CNN.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from seg_jax.ops.boxes import box_iou, encode_boxes
from seg_jax.ops.roi_align import roi_align_indexed

Array = jnp.ndarray


def _random_subset(key: Array, eligible: Array, k: int) -> tuple[Array, Array]:
    """Up to ``k`` eligible indices ``[k]`` drawn uniformly without replacement, eligible ones first, and their mask."""
    priority = jnp.where(eligible, jax.random.uniform(key, eligible.shape), -1.0)
    values, indices = jax.lax.top_k(priority, min(k, eligible.shape[0]))
    pad = k - indices.shape[0]
    return jnp.pad(indices, (0, pad)), jnp.pad(values >= 0.0, (0, pad))


def sample_balanced_indices(key: Array, labels: Array, *, num_samples: int,
                            positive_fraction: float) -> tuple[Array, Array]:
    """Balanced positive/negative sample as fixed-size indices, as torchvision's ``BalancedPositiveNegativeSampler``.

    Takes min(#positives, int(num_samples · positive_fraction)) positives, then fills up to ``num_samples`` with
    negatives while there are any; ignored entries are never taken.

    Args:
      key: a PRNG key.
      labels: ``[A]`` int, 1 positive, 0 negative, −1 ignore.
    Returns:
      ``(indices [num_samples] int32, valid [num_samples] bool)``: the sampled positives first, then the negatives,
      then unused slots (``valid`` False).
    """
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"sample_balanced: positive_fraction must lie in [0, 1], got {positive_fraction!r}")
    pos_key, neg_key = jax.random.split(key)
    pos_idx, pos_ok = _random_subset(pos_key, labels == 1, int(num_samples * positive_fraction))
    neg_idx, neg_ok = _random_subset(neg_key, labels == 0, num_samples)
    num_pos = jnp.sum(pos_ok)
    slot = jnp.arange(num_samples)
    neg_slot = jnp.clip(slot - num_pos, 0, num_samples - 1)
    is_pos = slot < num_pos
    indices = jnp.where(is_pos, jnp.pad(pos_idx, (0, num_samples - pos_idx.shape[0]))[slot], neg_idx[neg_slot])
    valid = is_pos | ((slot >= num_pos) & neg_ok[neg_slot])
    return indices.astype(jnp.int32), valid


def sample_balanced(key: Array, labels: Array, *, num_samples: int, positive_fraction: float) -> Array:
    """The sample of :func:`sample_balanced_indices` as a mask ``[A]`` bool over ``labels [A]`` (1 / 0 / −1)."""
    indices, valid = sample_balanced_indices(key, labels, num_samples=num_samples,
                                             positive_fraction=positive_fraction)
    return jnp.zeros(labels.shape, jnp.int32).at[indices].add(valid.astype(jnp.int32)) > 0


def label_anchors(anchors: Array, gt_boxes: Array, gt_valid: Array, *, positive_iou: float = 0.7,
                  negative_iou: float = 0.3, allow_low_quality_matches: bool = True) -> tuple[Array, Array]:
    """Labels anchors ``[A, 4]`` against ground truth ``[G, 4]`` (pixels), as torchvision's ``Matcher``.

    An anchor is positive (1) at best IoU ≥ ``positive_iou``, negative (0) below ``negative_iou``, ignored (−1) in
    between. With ``allow_low_quality_matches`` every anchor whose IoU with some ground truth equals that ground
    truth's best IoU (ties included) is positive too — unless that best IoU is 0 (torchvision would then make every
    non-overlapping anchor positive).

    Returns:
      ``(labels [A] int32, matched_gt [A] int32)``, matched_gt the index of the anchor's highest-IoU real ground
      truth (0 when there is none).
    """
    iou = jnp.where(gt_valid[:, None], box_iou(gt_boxes, anchors), -1.0)  # [G, A]
    matched = jnp.argmax(iou, axis=0).astype(jnp.int32)
    best = jnp.max(iou, axis=0)
    labels = jnp.where(best >= positive_iou, 1, jnp.where(best < negative_iou, 0, -1))
    if allow_low_quality_matches:
        best_per_gt = jnp.max(iou, axis=1, keepdims=True)
        is_best = (iou == best_per_gt) & gt_valid[:, None] & (best_per_gt > 0)
        labels = jnp.where(jnp.any(is_best, axis=0), 1, labels)
    return labels.astype(jnp.int32), matched


def rpn_targets(key: Array, anchors: Array, gt_boxes: Array, gt_valid: Array, *, num_samples: int = 256,
                positive_fraction: float = 0.5, positive_iou: float = 0.7, negative_iou: float = 0.3,
                weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> dict[str, Array]:
    """RPN targets for anchors ``[A, 4]``: :func:`label_anchors`, then a balanced sample of ``num_samples``.

    Returns a dict of
      ``objectness`` ``[A]`` float32, 1 for positive anchors (the BCE target);
      ``weights`` ``[A]`` float32, 1 for the sampled anchors (positive or negative);
      ``box_targets`` ``[A, 4]`` float32 deltas (coded with ``weights``, (1, 1, 1, 1) as in torchvision and
      Detectron2) to the matched ground truth, 0 for non-positive anchors;
      ``labels`` ``[A]`` int32 1 / 0 / −1 before sampling; ``matched_gt`` ``[A]`` int32.
    Feed ``objectness`` and ``weights`` to ``rpn_objectness_loss``, and ``box_targets``, ``objectness``, ``weights``
    to ``rpn_box_loss``.
    """
    labels, matched = label_anchors(anchors, gt_boxes, gt_valid, positive_iou=positive_iou,
                                    negative_iou=negative_iou)
    sampled = sample_balanced(key, labels, num_samples=num_samples, positive_fraction=positive_fraction)
    positive = labels == 1
    deltas = encode_boxes(gt_boxes[matched], anchors, weights=weights)
    return {"objectness": positive.astype(jnp.float32), "weights": sampled.astype(jnp.float32),
            "box_targets": jnp.where(positive[:, None], deltas, 0.0), "labels": labels, "matched_gt": matched}


def sample_rois(key: Array, proposals: Array, proposal_valid: Array, gt_boxes: Array, gt_classes: Array,
                gt_valid: Array, *, num_samples: int = 512, positive_fraction: float = 0.25,
                foreground_iou: float = 0.5, background_iou: float = 0.5,
                weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)) -> dict[str, Array]:
    """Box-head training RoIs: the ground-truth boxes join the proposals, which are matched and sampled.

    A candidate is foreground at IoU ≥ ``foreground_iou`` with a real ground truth, background below
    ``background_iou``, ignored in between (no gap by default). ``int(num_samples · positive_fraction)`` foreground
    RoIs at most, the rest background, as torchvision's ``RoIHeads``. Gradients do not flow into the proposals.

    Args:
      proposals: ``[P, 4]`` pixels, with ``proposal_valid [P]`` bool; gt_boxes ``[G, 4]``, gt_classes ``[G]`` int
        (≥ 1), gt_valid ``[G]`` bool.
    Returns a dict, foreground RoIs first (so the mask head may read only the first
    ``int(num_samples · positive_fraction)``):
      ``rois`` ``[num_samples, 4]``; ``classes`` ``[num_samples]`` int32 (0 background); ``box_targets``
      ``[num_samples, 4]`` deltas coded with ``weights`` (0 for background); ``weights`` ``[num_samples]`` float32,
      1 for sampled slots; ``matched_gt`` ``[num_samples]`` int32.
    """
    candidates = jnp.concatenate([jax.lax.stop_gradient(proposals), gt_boxes], axis=0)
    candidate_valid = jnp.concatenate([proposal_valid, gt_valid], axis=0)
    iou = jnp.where(gt_valid[:, None], box_iou(gt_boxes, candidates), -1.0)  # [G, P + G]
    matched = jnp.argmax(iou, axis=0).astype(jnp.int32)
    best = jnp.max(iou, axis=0)
    labels = jnp.where(best >= foreground_iou, 1, jnp.where(best < background_iou, 0, -1))
    labels = jnp.where(candidate_valid, labels, -1)
    indices, valid = sample_balanced_indices(key, labels, num_samples=num_samples,
                                             positive_fraction=positive_fraction)
    rois, matched = candidates[indices], matched[indices]
    foreground = valid & (labels[indices] == 1)
    deltas = encode_boxes(gt_boxes[matched], rois, weights=weights)
    return {"rois": rois, "classes": jnp.where(foreground, gt_classes[matched], 0).astype(jnp.int32),
            "box_targets": jnp.where(foreground[:, None], deltas, 0.0), "weights": valid.astype(jnp.float32),
            "matched_gt": matched}


def mask_targets(gt_masks: Array, rois: Array, matched_gt: Array, *, mask_size: int = 28, sampling_ratio: int = 2,
                 aligned: bool = True, binarize: bool = True) -> Array:
    """Mask-head targets: each RoI's matched instance mask cropped and resized with RoIAlign.

    Args:
      gt_masks: ``[G, H, W]`` binary instance masks at the input resolution (the boxes' pixel frame).
      rois: ``[R, 4]`` pixels; matched_gt: ``[R]`` int, the instance each RoI is matched to.
      binarize: threshold the resampled masks at 0.5, as Detectron2 does (torchvision keeps the soft values).
    Returns:
      ``[R, mask_size, mask_size]`` float32 in [0, 1].
    """
    crops = roi_align_indexed(gt_masks[..., None].astype(jnp.float32), jax.lax.stop_gradient(rois), matched_gt,
                              output_size=mask_size, sampling_ratio=sampling_ratio, aligned=aligned)[..., 0]
    return (crops >= 0.5).astype(jnp.float32) if binarize else crops
