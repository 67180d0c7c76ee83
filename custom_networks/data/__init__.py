"""Data for the bundles: demo datasets in the public layouts, datalists split by patient, input checks, and the
synthetic sample study of the main job. Import the module you need; nothing heavy is loaded here."""

__all__ = ["bundle_inputs", "datalist", "demo", "sample_study"]
