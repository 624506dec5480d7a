"""Datasets: canonical format, importers (MovieLens, Last.fm), synthetic generator, validation, cleaning, splits."""

from recsys.data.canonical import load_canonical, save_canonical
from recsys.data.cleaning import clean
from recsys.data.lastfm import load_lastfm
from recsys.data.movielens import load_movielens_100k, load_movielens_latest
from recsys.data.schema import EVENT_WEIGHTS, Dataset, DatasetError
from recsys.data.spec import load_dataset
from recsys.data.split import holdout_by_user, stratified_split, temporal_split
from recsys.data.synthetic import generate

__all__ = [
    "EVENT_WEIGHTS",
    "Dataset",
    "DatasetError",
    "clean",
    "generate",
    "holdout_by_user",
    "load_canonical",
    "load_dataset",
    "load_lastfm",
    "load_movielens_100k",
    "load_movielens_latest",
    "save_canonical",
    "stratified_split",
    "temporal_split",
]
