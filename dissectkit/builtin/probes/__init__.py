"""Built-in probe datasets (kind ``probe``): generic folders/CSVs and the mammography / chest X-ray sets."""

from __future__ import annotations

from dissectkit.builtin.probes.cbis import CbisDdsmProbe, CbisParams
from dissectkit.builtin.probes.generic import CsvParams, CsvProbe, ImageFolderParams, ImageFolderProbe
from dissectkit.builtin.probes.mammo import RsnaMammoProbe, RsnaParams, VindrMammoProbe, VindrParams
from dissectkit.builtin.probes.nih import NihCxr14Probe, NihParams
from dissectkit.host.hookspecs import hookimpl
from dissectkit.host.registry import Register

# The probe classes are their own factories: ``Probe(params, ctx)``. Their modules import no
# heavy library at load time (pydicom and PIL load when an image is read).


@hookimpl
def dissectkit_register_probes(register: Register) -> None:
    add = register
    add("image-folder", ImageFolderProbe, params=ImageFolderParams,
        description="Images in a folder; class sub-folders become the label 'class'.", licence=None)
    add("csv", CsvProbe, params=CsvParams,
        description="A CSV manifest: a path column, label columns and optional mask columns.", licence=None)
    add("vindr-mammo", VindrMammoProbe, params=VindrParams,
        description="VinDr-Mammo (PhysioNet DICOM layout or Mammo-CLIP PNG layout).",
        licence="PhysioNet Restricted Health Data License 1.5.0 (user download)")
    add("rsna-mammo", RsnaMammoProbe, params=RsnaParams,
        description="RSNA Screening Mammography (train.csv + train_images/<patient>/<image>.dcm).",
        licence="Kaggle competition rules (user download)")
    add("cbis-ddsm", CbisDdsmProbe, params=CbisParams,
        description="CBIS-DDSM full mammograms; ROI masks per BI-RADS concept.",
        licence="CC BY 3.0 (TCIA, user download)")
    add("nih-cxr14", NihCxr14Probe, params=NihParams,
        description="NIH ChestX-ray14; bounding boxes as per-finding box masks.",
        licence="NIH Clinical Center terms (user download)")
