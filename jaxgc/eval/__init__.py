"""Evaluation of generators: Inception features, FID/KID, k-NN and LSH precision/recall."""

from jaxgc.data.reference import load_images
from jaxgc.data.reference import read_idx
from jaxgc.eval.scoring import compare
from jaxgc.eval.scoring import generate_images
from jaxgc.eval.extractors import cached_features
from jaxgc.eval.extractors import extract_features
from jaxgc.eval.extractors import lenet5_features
from jaxgc.eval.fid_inception import RESIZE_MODES
from jaxgc.eval.fid_inception import convert_inception
from jaxgc.eval.fid_inception import inception_features
from jaxgc.eval.fid_inception import load_inception
from jaxgc.eval.fid_inception import resize_images
from jaxgc.eval.lsh import knn_radii
from jaxgc.eval.lsh import lsh_precision_recall
from jaxgc.eval.metrics import feature_statistics
from jaxgc.eval.metrics import fid
from jaxgc.eval.metrics import frechet_distance
from jaxgc.eval.metrics import kid
from jaxgc.eval.metrics import prdc
