"""Built-in probe datasets (kind ``probe``): generic folders/CSVs and the mammography / chest X-ray sets."""

from __future__ import annotations

from dissectkit.builtin.probes.cbis import CbisParams
from dissectkit.builtin.probes.generic import CsvParams, ImageFolderParams
from dissectkit.builtin.probes.mammo import RsnaParams, VindrParams
from dissectkit.builtin.probes.nih import NihParams
from dissectkit.hookspecs import hookimpl


def _image_folder(params, ctx):
    from dissectkit.builtin.probes.generic import ImageFolderProbe

    return ImageFolderProbe(params, ctx)


def _csv(params, ctx):
    from dissectkit.builtin.probes.generic import CsvProbe

    return CsvProbe(params, ctx)


def _vindr(params, ctx):
    from dissectkit.builtin.probes.mammo import VindrMammoProbe

    return VindrMammoProbe(params, ctx)


def _rsna(params, ctx):
    from dissectkit.builtin.probes.mammo import RsnaMammoProbe

    return RsnaMammoProbe(params, ctx)


def _cbis(params, ctx):
    from dissectkit.builtin.probes.cbis import CbisDdsmProbe

    return CbisDdsmProbe(params, ctx)


def _nih(params, ctx):
    from dissectkit.builtin.probes.nih import NihCxr14Probe

    return NihCxr14Probe(params, ctx)


@hookimpl
def dissectkit_register_probes(registry):
    add = registry.add
    add("probe", "image-folder", _image_folder, params=ImageFolderParams,
        description="Images in a folder; class sub-folders become the label 'class'.", licence=None)
    add("probe", "csv", _csv, params=CsvParams,
        description="A CSV manifest: a path column, label columns and optional mask columns.", licence=None)
    add("probe", "vindr-mammo", _vindr, params=VindrParams,
        description="VinDr-Mammo (PhysioNet DICOM layout or Mammo-CLIP PNG layout).",
        licence="PhysioNet Restricted Health Data License 1.5.0 (user download)")
    add("probe", "rsna-mammo", _rsna, params=RsnaParams,
        description="RSNA Screening Mammography (train.csv + train_images/<patient>/<image>.dcm).",
        licence="Kaggle competition rules (user download)")
    add("probe", "cbis-ddsm", _cbis, params=CbisParams,
        description="CBIS-DDSM full mammograms; ROI masks per BI-RADS concept.",
        licence="CC BY 3.0 (TCIA, user download)")
    add("probe", "nih-cxr14", _nih, params=NihParams,
        description="NIH ChestX-ray14; bounding boxes as per-finding box masks.",
        licence="NIH Clinical Center terms (user download)")
