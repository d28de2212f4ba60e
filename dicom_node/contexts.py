"""The presentation contexts we accept (our side of the conformance statement)."""

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2K,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000,
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
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
    _STORAGE_CLASSES,
)

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]

STORAGE_TRANSFER_SYNTAXES = [
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
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
]


def supported_contexts(*, accept_deflated: bool) -> list[PresentationContext]:
    """Contexts for Verification, Storage (SCP, and SCU for C-GET), Q/R and Commitment."""
    storage_syntaxes = list(STORAGE_TRANSFER_SYNTAXES)
    if accept_deflated:
        storage_syntaxes.insert(2, DeflatedExplicitVRLittleEndian)
    contexts = [build_context(Verification, UNCOMPRESSED)]
    for sop_class in STORAGE_SOP_CLASSES:
        context = build_context(sop_class, storage_syntaxes)
        # A C-GET requestor proposes to be the Storage SCP; we agree to either role.
        context.scu_role = True
        context.scp_role = True
        contexts.append(context)
    contexts += [build_context(uid, UNCOMPRESSED) for uid in QUERY_RETRIEVE_SOP_CLASSES]
    contexts.append(build_context(StorageCommitmentPushModel, UNCOMPRESSED))
    return contexts
