"""Build SAM3 models: a small random-init model of the real architecture, or the full model from
a user-supplied checkpoint. Building is kept apart from prediction (predictor.py, stream.py).

Both builders return a `Sam3Model`: the image detector (`Sam3Image`: ViT trunk + dual neck,
text encoder, fusion encoder, decoder, segmentation head) and the memory tracker
(`Sam3TrackerBase`), which reads the detector backbone's second ("sam2") neck. Nothing is ever
downloaded.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from segmentation_node.atomic_io import file_sha256
from segmentation_node.sam3_backend.device import cpu_redirect, default_device
from segmentation_node.sam3_backend.input_size import FULL_IMAGE_SIZE, PATCH_SIZE, check_image_size

D_MODEL = 256  # fixed across sam3's private helpers (scoring, heads, geometry encoder)
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


@dataclass(eq=False)
class Sam3Model:
    """A built model: the detector, the tracker that shares its backbone, and what they expect."""

    detector: nn.Module  # sam3.model.sam3_image.Sam3Image
    tracker: nn.Module   # sam3.model.sam3_tracker_base.Sam3TrackerBase
    image_size: int      # square input resolution, a multiple of PATCH_SIZE
    model_version: str
    device: torch.device

    @property
    def parameter_count(self) -> int:
        modules = {id(m): m for m in (self.detector, self.tracker)}
        return sum(p.numel() for m in modules.values() for p in m.parameters())


def find_bpe_vocab() -> Path:
    """The CLIP BPE vocabulary. The sam3 wheel lacks its copy; open_clip ships the same file.
    Located via find_spec so open_clip (and its heavy imports) is never imported."""
    candidates = []
    for package in ("sam3", "open_clip"):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        package_dir = Path(spec.origin).parent
        candidates += [package_dir / BPE_FILE, package_dir.parent / "assets" / BPE_FILE]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{BPE_FILE} not found (looked in: {', '.join(map(str, candidates))}); "
                            "install open_clip_torch, which ships it")


def build_small_sam3(image_size: int = 224, seed: int = 0, vit_width: int = 192, vit_depth: int = 4,
                     text_width: int = 256, text_layers: int = 2, fusion_layers: int = 2,
                     decoder_layers: int = 2, num_queries: int = 50, num_maskmem: int = 4,
                     device: torch.device | str | None = None) -> Sam3Model:
    """A small SAM3 of the real architecture, random weights (deterministic for a seed).

    Every module is the sam3 package's own class; only depth, width, query count and input size
    shrink. Random weights give meaningless masks: this is for contracts, timing and tests."""
    grid = check_image_size(image_size, "image_size") // PATCH_SIZE
    window = grid // 2
    device = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[]), cpu_redirect():
        torch.manual_seed(seed)
        detector = _small_detector(image_size, grid, window, vit_width, vit_depth, text_width,
                                   text_layers, fusion_layers, decoder_layers, num_queries)
        tracker = _small_tracker(image_size, grid, num_maskmem)
        _init_text_encoder_placeholders(detector)
    version = (f"sam3-small-random-seed{seed}-{image_size}px-vit{vit_width}x{vit_depth}"
               f"-txt{text_width}x{text_layers}")
    return _finish(detector, tracker, image_size, version, device)


def build_sam3(checkpoint: Path | str, device: torch.device | str | None = None) -> Sam3Model:
    """The full-size SAM3 (detector + tracker) from a local checkpoint (e.g. `sam3.pt`)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"SAM3 checkpoint not found: {checkpoint} (weights are never "
                                "downloaded; pass the path of a local sam3.pt)")
    if checkpoint.stat().st_size == 0:
        raise ValueError(f"SAM3 checkpoint is empty: {checkpoint}")
    version = f"sam3-{checkpoint.name}-{file_sha256(checkpoint)[:12]}"
    return _build_full(str(checkpoint), version, seed=0, device=device)


def build_full_size_sam3_random(seed: int = 0, device: torch.device | str | None = None) -> Sam3Model:
    """The full-size architecture with random weights: for timing and memory measurements."""
    return _build_full(None, f"sam3-full-random-seed{seed}", seed=seed, device=device)


def resize_input(model: Sam3Model, image_size: int) -> None:
    """Run `model` at another square input size (a multiple of 14): the ViT's global-attention
    RoPE tables are rebuilt for the new grid (interpolated to the pretraining grid, as the ViT
    does at construction) and the tracker's size-derived attributes follow. Window attention,
    the tiled absolute position embedding and the feature-size caches adapt on their own.
    Accuracy away from the trained 1008 px is the release gate's to judge on your data."""
    grid = check_image_size(image_size) // PATCH_SIZE
    with cpu_redirect():
        for block in model.detector.backbone.vision_backbone.trunk.blocks:
            if block.window_size == 0:  # global attention: RoPE over the whole grid
                block.attn.input_size = (grid, grid)
                block.attn._setup_rope_freqs()
                block.attn.freqs_cis = block.attn.freqs_cis.to(model.device)
    tracker = model.tracker
    tracker.image_size = image_size
    tracker.low_res_mask_size = grid * 4
    tracker.input_mask_size = grid * 16
    tracker.sam_image_embedding_size = grid
    prompt_encoder = tracker.sam_prompt_encoder
    prompt_encoder.image_embedding_size = (grid, grid)
    prompt_encoder.input_image_size = (image_size, image_size)
    prompt_encoder.mask_input_size = (grid * 4, grid * 4)
    # The mask downsampler's total stride is 16.
    tracker.maskmem_backbone.mask_downsampler.interpol_size = [grid * 16, grid * 16]
    model.image_size = image_size
    model.model_version = f"{model.model_version.split('@')[0]}@{image_size}px"


def _build_full(checkpoint: str | None, version: str, seed: int,
                device: torch.device | str | None) -> Sam3Model:
    from sam3.model_builder import build_sam3_video_model

    device = torch.device(device) if device is not None else default_device()
    with torch.random.fork_rng(devices=[]), cpu_redirect():
        torch.manual_seed(seed)
        try:
            video_model = build_sam3_video_model(
                checkpoint_path=checkpoint, load_from_HF=False, bpe_path=str(find_bpe_vocab()),
                device="cpu")
        except (RuntimeError, KeyError, EOFError, OSError) as error:
            raise ValueError(f"cannot load SAM3 checkpoint {checkpoint}: {error}") from error
        detector, tracker = video_model.detector, video_model.tracker
        if checkpoint is None:
            _init_text_encoder_placeholders(detector)
    return _finish(detector, tracker, FULL_IMAGE_SIZE, version, device)


def _finish(detector: nn.Module, tracker: nn.Module, image_size: int, version: str,
            device: torch.device) -> Sam3Model:
    detector.to(device).eval()
    tracker.to(device).eval()
    return Sam3Model(detector, tracker, image_size, version, device)


def _init_text_encoder_placeholders(detector: nn.Module) -> None:
    """sam3 creates these with torch.empty and relies on the checkpoint: without one they hold
    garbage and every output turns NaN. Same init as open_clip's text transformer."""
    text = detector.backbone.language_backbone.encoder
    with torch.no_grad():
        nn.init.normal_(text.positional_embedding, std=0.01)
        if isinstance(text.text_projection, nn.Parameter):
            nn.init.normal_(text.text_projection, std=text.width ** -0.5)


def _attention(heads: int = 8, batch_first: bool = False, dropout: float = 0.1):
    from sam3.model.model_misc import MultiheadAttentionWrapper

    return MultiheadAttentionWrapper(num_heads=heads, dropout=dropout, embed_dim=D_MODEL,
                                     batch_first=batch_first)


def _position_encoding(num_pos_feats: int = D_MODEL):
    from sam3.model.position_encoding import PositionEmbeddingSine

    # precompute_resolution=None: the precompute path allocates on CUDA.
    return PositionEmbeddingSine(num_pos_feats=num_pos_feats, normalize=True, scale=None,
                                 temperature=10000, precompute_resolution=None)


def _small_detector(image_size, grid, window, vit_width, vit_depth, text_width, text_layers,
                    fusion_layers, decoder_layers, num_queries) -> nn.Module:
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.model_misc import MLP, DotProductScoring, TransformerWrapper
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vitdet import ViT
    from sam3.model.vl_combiner import SAM3VLBackbone

    # Same layout as the full trunk (window attention with a global block every other layer,
    # RoPE interpolated from window to global size), only narrower and shallower.
    trunk = ViT(img_size=image_size, pretrain_img_size=image_size, patch_size=PATCH_SIZE,
                embed_dim=vit_width, depth=vit_depth, num_heads=max(1, vit_width // 64),
                mlp_ratio=4.625, drop_path_rate=0.0, qkv_bias=True, use_abs_pos=True,
                tile_abs_pos=True, global_att_blocks=tuple(range(1, vit_depth, 2)),
                rel_pos_blocks=(), use_rope=True, use_interp_rope=True, window_size=window,
                pretrain_use_cls_token=True, retain_cls_token=False, ln_pre=True, ln_post=False,
                return_interm_layers=False, bias_patch_embed=False, use_act_checkpoint=False)
    # The second neck feeds the tracker, as in the video model.
    neck = Sam3DualViTDetNeck(position_encoding=_position_encoding(), d_model=D_MODEL,
                              scale_factors=[4.0, 2.0, 1.0, 0.5], trunk=trunk, add_sam2_neck=True)
    text_encoder = VETextEncoder(tokenizer=SimpleTokenizer(bpe_path=str(find_bpe_vocab())),
                                 d_model=D_MODEL, width=text_width, heads=max(1, text_width // 64),
                                 layers=text_layers, use_act_checkpoint=False)
    backbone = SAM3VLBackbone(visual=neck, text=text_encoder, scalp=1)

    fusion_layer = TransformerEncoderLayer(
        activation="relu", d_model=D_MODEL, dim_feedforward=4 * D_MODEL, dropout=0.1,
        pos_enc_at_attn=True, pos_enc_at_cross_attn_keys=False,
        pos_enc_at_cross_attn_queries=False, pre_norm=True,
        self_attention=_attention(batch_first=True), cross_attention=_attention(batch_first=True))
    fusion_encoder = TransformerEncoderFusion(
        layer=fusion_layer, num_layers=fusion_layers, d_model=D_MODEL, num_feature_levels=1,
        frozen=False, use_act_checkpoint=False, add_pooled_text_to_img_feat=False,
        pool_text_with_mask=True)
    decoder_layer = TransformerDecoderLayer(
        activation="relu", d_model=D_MODEL, dim_feedforward=4 * D_MODEL, dropout=0.1,
        cross_attention=_attention(), n_heads=8, use_text_cross_attention=True)
    # resolution/stride None: the coordinate cache they enable is allocated on CUDA.
    decoder = TransformerDecoder(
        layer=decoder_layer, num_layers=decoder_layers, num_queries=num_queries,
        return_intermediate=True, box_refine=True, num_o2m_queries=0, dac=True, boxRPB="log",
        d_model=D_MODEL, frozen=False, interaction_layer=None, dac_use_selfatt_ln=True,
        resolution=None, stride=None, use_act_checkpoint=False, presence_token=True)
    transformer = TransformerWrapper(encoder=fusion_encoder, decoder=decoder, d_model=D_MODEL)

    scoring = DotProductScoring(d_model=D_MODEL, d_proj=D_MODEL, prompt_mlp=MLP(
        input_dim=D_MODEL, hidden_dim=4 * D_MODEL, output_dim=D_MODEL, num_layers=2,
        dropout=0.1, residual=True, out_norm=nn.LayerNorm(D_MODEL)))
    segmentation_head = UniversalSegmentationHead(
        hidden_dim=D_MODEL, upsampling_stages=3, aux_masks=False, presence_head=False,
        dot_product_scorer=None, act_ckpt=False, cross_attend_prompt=_attention(dropout=0.0),
        pixel_decoder=PixelDecoder(num_upsampling_stages=3, interpolation_mode="nearest",
                                   hidden_dim=D_MODEL))
    geometry_layer = TransformerEncoderLayer(
        activation="relu", d_model=D_MODEL, dim_feedforward=4 * D_MODEL, dropout=0.1,
        pos_enc_at_attn=False, pre_norm=True, self_attention=_attention(),
        pos_enc_at_cross_attn_queries=False, pos_enc_at_cross_attn_keys=True,
        cross_attention=_attention())
    geometry_encoder = SequenceGeometryEncoder(
        pos_enc=_position_encoding(), encode_boxes_as_points=False, points_direct_project=True,
        points_pool=True, points_pos_enc=True, boxes_direct_project=True, boxes_pool=True,
        boxes_pos_enc=True, d_model=D_MODEL, num_layers=1, layer=geometry_layer,
        use_act_ckpt=False, add_cls=True, add_post_encode_proj=True)
    return Sam3Image(backbone=backbone, transformer=transformer,
                     input_geometry_encoder=geometry_encoder, segmentation_head=segmentation_head,
                     num_feature_levels=1, o2m_mask_predict=True, dot_prod_scoring=scoring,
                     use_instance_query=False, multimask_output=True,
                     use_act_checkpoint_seg_head=False, supervise_joint_box_scores=True)


def _small_tracker(image_size: int, grid: int, num_maskmem: int) -> nn.Module:
    from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention
    from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
    from sam3.model.model_misc import TransformerWrapper
    from sam3.model.sam3_tracker_base import Sam3TrackerBase
    from sam3.sam.transformer import RoPEAttention

    mask_encoder = SimpleMaskEncoder(
        out_dim=64, position_encoding=_position_encoding(64),
        # The downsampler's total stride is 16: interpolate masks to 16x the feature grid.
        mask_downsampler=SimpleMaskDownSampler(kernel_size=3, stride=2, padding=1,
                                               interpol_size=[grid * 16, grid * 16]),
        fuser=SimpleFuser(layer=CXBlock(dim=D_MODEL, kernel_size=7, padding=3,
                                        layer_scale_init_value=1.0e-06, use_dwconv=True),
                          num_layers=1))
    memory_layer = TransformerDecoderLayerv2(
        cross_attention_first=False, activation="relu", dim_feedforward=4 * D_MODEL, dropout=0.1,
        pos_enc_at_attn=False, pre_norm=True, d_model=D_MODEL, pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=RoPEAttention(embedding_dim=D_MODEL, num_heads=1, downsample_rate=1,
                                     dropout=0.1, rope_theta=10000.0, feat_sizes=[grid, grid],
                                     use_fa3=False, use_rope_real=False),
        cross_attention=RoPEAttention(embedding_dim=D_MODEL, num_heads=1, downsample_rate=1,
                                      dropout=0.1, kv_in_dim=64, rope_theta=10000.0,
                                      feat_sizes=[grid, grid], rope_k_repeat=True, use_fa3=False,
                                      use_rope_real=False))
    memory_attention = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[], batch_first=True, d_model=D_MODEL, frozen=False,
        pos_enc_at_input=True, layer=memory_layer, num_layers=1, use_act_checkpoint=False)
    return Sam3TrackerBase(
        backbone=None, transformer=TransformerWrapper(encoder=memory_attention, decoder=None,
                                                      d_model=D_MODEL),
        maskmem_backbone=mask_encoder, num_maskmem=num_maskmem, image_size=image_size,
        backbone_stride=PATCH_SIZE, max_cond_frames_in_attn=1, multimask_output_in_sam=True,
        multimask_output_for_tracking=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        forward_backbone_per_frame_for_eval=True, non_overlap_masks_for_mem_enc=False,
        sam_mask_decoder_extra_args={"dynamic_multimask_via_stability": True,
                                     "dynamic_multimask_stability_delta": 0.05,
                                     "dynamic_multimask_stability_thresh": 0.98})
