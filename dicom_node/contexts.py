"""The presentation contexts we accept (our side of the conformance statement)."""

from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import _STORAGE_CLASSES

# The non-storage SOP classes we serve (PS3.4), as constants mypy can see.
MAX_CONTEXTS = 128
"""Presentation contexts one association can propose (PS3.8 9.3.2.2: odd IDs 1-255)."""
VERIFICATION = UID("1.2.840.10008.1.1")
PATIENT_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.1.1")
PATIENT_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.1.2")
PATIENT_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.1.3")
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.2.2")
STUDY_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")
STORAGE_COMMITMENT_PUSH = UID("1.2.840.10008.1.20.1")
STORAGE_COMMITMENT_INSTANCE = UID("1.2.840.10008.1.20.1.1")

UNCOMPRESSED: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

STORAGE_TRANSFER_SYNTAXES: list[str | UID] = [
    *UNCOMPRESSED,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
]
"""Accepted as the peer proposes them: we take the first of its list that is here."""

STORAGE_SOP_CLASSES = sorted(set(_STORAGE_CLASSES.values()))
"""Every storage SOP class pynetdicom knows (PS3.4 Annex B and its extensions)."""

QUERY_RETRIEVE_SOP_CLASSES = [
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_MOVE,
    PATIENT_ROOT_GET,
    STUDY_ROOT_GET,
]


def supported_contexts(*, accept_deflated: bool) -> list[PresentationContext]:
    """Contexts for Verification, Storage (SCP, and SCU for C-GET), Q/R and Commitment."""
    storage_syntaxes = list(STORAGE_TRANSFER_SYNTAXES)
    if accept_deflated:
        storage_syntaxes.insert(2, DeflatedExplicitVRLittleEndian)
    contexts = [build_context(VERIFICATION, UNCOMPRESSED)]
    for sop_class in STORAGE_SOP_CLASSES:
        context = build_context(sop_class, storage_syntaxes)
        # A C-GET requestor proposes to be the Storage SCP; we agree to either role.
        context.scu_role = True
        context.scp_role = True
        contexts.append(context)
    contexts += [build_context(uid, UNCOMPRESSED) for uid in QUERY_RETRIEVE_SOP_CLASSES]
    contexts.append(build_context(STORAGE_COMMITMENT_PUSH, UNCOMPRESSED))
    return contexts
