"""Post-training compression of variables trees: selection, clipping, quantization, storage."""

from jaxgc.compress.clip import ClipConfig
from jaxgc.compress.clip import clip_tensor
from jaxgc.compress.clip import clip_threshold
from jaxgc.compress.clip import clip_weights
from jaxgc.compress.quantize import QuantConfig
from jaxgc.compress.quantize import compute_scale_zero_point
from jaxgc.compress.quantize import dequantize
from jaxgc.compress.quantize import fake_quant
from jaxgc.compress.quantize import fake_quantize
from jaxgc.compress.quantize import quantize_int
from jaxgc.compress.selection import DEFAULT_INCLUDE
from jaxgc.compress.selection import map_selected
from jaxgc.compress.selection import path_str
from jaxgc.compress.selection import select
from jaxgc.compress.selection import selected_paths
from jaxgc.compress.storage import QuantizedTensor
from jaxgc.compress.storage import dequantize_variables
from jaxgc.compress.storage import fp32_bytes
from jaxgc.compress.storage import load_quantized
from jaxgc.compress.storage import pack_int4
from jaxgc.compress.storage import quantize_tensor
from jaxgc.compress.storage import quantize_variables
from jaxgc.compress.storage import save_quantized
from jaxgc.compress.storage import unpack_int4
