"""Evaluation of generators: Inception features, FID/KID, k-NN and LSH precision/recall."""

from jaxgc.eval.data import load_images
from jaxgc.eval.data import read_idx
from jaxgc.eval.evaluate import compare
from jaxgc.eval.evaluate import generate_images
from jaxgc.eval.features import cached_features
from jaxgc.eval.features import extract_features
from jaxgc.eval.features import lenet5_features
from jaxgc.eval.inception import RESIZE_MODES
from jaxgc.eval.inception import convert_inception
from jaxgc.eval.inception import inception_features
from jaxgc.eval.inception import load_inception
from jaxgc.eval.inception import resize_images
from jaxgc.eval.lsh import knn_radii
from jaxgc.eval.lsh import lsh_precision_recall
from jaxgc.eval.metrics import feature_statistics
from jaxgc.eval.metrics import fid
from jaxgc.eval.metrics import frechet_distance
from jaxgc.eval.metrics import kid
from jaxgc.eval.metrics import prdc
