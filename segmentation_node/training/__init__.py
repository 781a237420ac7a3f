"""Fine-tuning SAM3 on workcell data (`workcell_finetune`).

Stage 1 trains the detector and its segmentation head through sam3's own forward, matcher and
losses (trunk and text encoder frozen); stage 2 trains the memory tracker on consecutive frames
with the perception encoder frozen. Data are COCO directories (synthetic ground truth, audited
flywheel shards), split held-out by correlated units (run, camera, time, SKU), never by frame."""
