"""Distillation losses: the public names of `keras_distill.terms`, re-exported.

The terms live in `keras_distill.terms`, one module per method; this module
keeps every name that `keras_distill.losses` has offered (the pure
functions, the terms, the registry and the older `keras.losses.Loss` forms)
so that existing code and saved files work unchanged.
"""

from keras_distill.terms import (  # noqa: F401
    TERMS,
    AttentionTransferTerm,
    CTKDTerm,
    DistillationTerm,
    DKDTerm,
    FeatureDistanceTerm,
    KDTerm,
    LogitMSETerm,
    MSETerm,
    PKTTerm,
    RKDAngleTerm,
    RKDDistanceTerm,
    SimilarityPreservingTerm,
    TermLoss,
    get_term,
)
from keras_distill.terms.at import attention_map, attention_transfer_loss  # noqa: F401
from keras_distill.terms.common import (  # noqa: F401
    OUTPUT_KINDS,
    _num_replicas,
    check_output_kind,
    mix_teachers,
    reduce_per_example,
    sparse_ce_mean_loss,
    standardize_logits,
    to_logits,
)
from keras_distill.terms.ctkd import gradient_reversal  # noqa: F401
from keras_distill.terms.dkd import dkd_loss  # noqa: F401
from keras_distill.terms.feature import FEATURE_DISTANCES, feature_distance  # noqa: F401
from keras_distill.terms.kd import kd_loss, kd_mean_loss, topk_kd_loss  # noqa: F401
from keras_distill.terms.legacy import (  # noqa: F401
    DecoupledKD,
    HintLoss,
    KnowledgeDistillation,
    LogitMSE,
)
from keras_distill.terms.mse import hint_loss, logit_mse_loss  # noqa: F401
from keras_distill.terms.pkt import pkt_loss  # noqa: F401
from keras_distill.terms.rkd import rkd_angle_loss, rkd_distance_loss  # noqa: F401
from keras_distill.terms.sp import similarity_preserving_loss  # noqa: F401
