"""The HTML report's attribute panels of ``mammo-factor`` (docs/methods.md, "Mammo-FActOR"): per
attribute its top channels and its top images with the attribute heatmap and the true masks."""

from __future__ import annotations

from typing import Any

import numpy as np

from dissectkit.report.assets import colormap_lut, heatmap_rgba, png_data_uri


def attribute_panels(run: Any, ll: Any, visuals: Any, opts: Any) -> list[dict[str, Any]]:
    """One panel per attribute kept in ``ll.extra["attributes"]`` (none for other methods). Images
    are shown when the run is live (their thumbnails are written once, shared with the cards); the
    heatmap alone otherwise."""
    views = (getattr(ll, "extra", None) or {}).get("attributes") or []
    if not views:
        return []
    lut = colormap_lut(opts.colormap)
    assets = getattr(visuals, "assets", None)
    panels = []
    for view in views:
        images = []
        for img in view.get("images", []):
            index = img.get("index")
            heat = np.asarray(img.get("heatmap") or [[0.0]], dtype=np.float32)
            peak = float(heat.max()) if heat.size else 0.0
            scaled = np.clip(heat / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(heat)
            entry: dict[str, Any] = {
                "id": run.probe_ids[index] if index is not None and index < len(run.probe_ids) else f"row {img.get('row')}",
                "score": img.get("score"), "present": img.get("present"), "iou": img.get("iou"),
                "pointing": img.get("pointing"), "heat": png_data_uri(heatmap_rgba(scaled[None], lut, opts.heatmap_alpha)[0]),
                "src": None, "w": opts.thumb_size, "h": opts.thumb_size, "outlines": [],
            }
            if assets is not None and index is not None:
                _thumbnail(visuals, assets, index)
                if index in assets.thumbs:
                    entry["src"], entry["w"], entry["h"] = assets.thumbs[index]
                    entry["outlines"] = [{"concept": c, "src": src} for c in view.get("mask_classes", [])
                                         if (src := assets.outline(index, c)) is not None]
            images.append(entry)
        panels.append({
            "attribute": view["attribute"], "mask_classes": view.get("mask_classes", []),
            "positives": view.get("positives"), "channels": view.get("channels", []),
            "pointing": view.get("pointing"), "iou": view.get("iou"), "images": images,
        })
    return panels


def _thumbnail(visuals: Any, assets: Any, index: int) -> None:
    """Write probe image ``index``'s thumbnail unless it is there (an unreadable image is recorded)."""
    if index in assets.thumbs or index in assets.errors:
        return
    try:
        assets.add(index, visuals.evidence.read(index))
    except Exception as exc:  # noqa: BLE001 - any unreadable image becomes a missing thumbnail
        assets.fail(index, str(exc))
