"""Data for the bundles: demo datasets in the public layouts, datalists split by patient, input checks, the
synthetic sample study of the main job, and lesions on the MNI152 template (``lesion_slices``). Import the module
you need; nothing heavy is loaded here."""

__all__ = ["bundle_inputs", "datalist", "demo", "lesion_slices", "sample_study"]
