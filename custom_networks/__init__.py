"""Attention U-Net variants from five papers, as MONAI networks."""
