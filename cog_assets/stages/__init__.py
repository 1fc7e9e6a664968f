"""The pipeline's steps as plain functions over tables and a store; Dagster calls these."""
