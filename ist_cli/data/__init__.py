"""Datasets for the MLP model and their division among workers (see docs/datasets.md)."""

from ist_cli.data.dataset import Dataset
from ist_cli.data.load import dataset_from_config, dataset_from_settings, load_dataset
from ist_cli.data.partition import partition_indices

__all__ = ["Dataset", "dataset_from_config", "dataset_from_settings", "load_dataset", "partition_indices"]
