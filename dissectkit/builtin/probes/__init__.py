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
    for name, probe, params, description, licence in (
        ("image-folder", ImageFolderProbe, ImageFolderParams,
         "Images in a folder; class sub-folders become the label 'class'.", None),
        ("csv", CsvProbe, CsvParams,
         "A CSV manifest: a path column, label columns and optional mask columns.", None),
        ("vindr-mammo", VindrMammoProbe, VindrParams,
         "VinDr-Mammo (PhysioNet DICOM layout or Mammo-CLIP PNG layout).",
         "PhysioNet Restricted Health Data License 1.5.0 (user download)"),
        ("rsna-mammo", RsnaMammoProbe, RsnaParams,
         "RSNA Screening Mammography (train.csv + train_images/<patient>/<image>.dcm).",
         "Kaggle competition rules (user download)"),
        ("cbis-ddsm", CbisDdsmProbe, CbisParams, "CBIS-DDSM full mammograms; ROI masks per BI-RADS concept.",
         "CC BY 3.0 (TCIA, user download)"),
        ("nih-cxr14", NihCxr14Probe, NihParams, "NIH ChestX-ray14; bounding boxes as per-finding box masks.",
         "NIH Clinical Center terms (user download)"),
    ):
        register(name, probe, params=params, description=description, licence=licence)
