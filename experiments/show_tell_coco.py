"""Paper baseline: Show and Tell on COCO, BLEU-4 27.7 (Vinyals et al. 2015, Table 1).

Vinyals, Toshev, Bengio, Erhan 2015, "Show and Tell: A Neural Image Caption Generator", Table 1:
NIC on the MSCOCO development set, BLEU-4 27.7, METEOR 23.7, CIDEr 85.5 (their encoder: a
BatchNorm GoogLeNet pretrained on ImageNet). configs/show_tell_coco.py runs the recipe with a
ResNet-50 encoder on Karpathy's splits and reports BLEU-4 as a fraction (0.277) on the 5,000-image
test split, with coco-caption's scorers; tokenization differs slightly from coco-caption's PTB
tokenizer (research.evaluation.captioning), within the tolerance. Needs an ImageNet ResNet-50
run (config.init_from.workdir) and coco_captions prepared in data_dir.
"""
from research.sweeps import Baseline, Experiment, SlurmResources


def get_experiment() -> Experiment:
  return Experiment(
      name="show_tell_coco",
      config="show_tell_coco",
      seeds=(0,),
      metric="eval/bleu_4",
      baseline=Baseline(
          metric="eval/bleu_4", expected=0.277, tolerance=0.01, note="BLEU-4 27.7 (CIDEr 85.5)",
          source="Vinyals, Toshev, Bengio, Erhan 2015, Show and Tell: A Neural Image Caption "
                 "Generator, Table 1 (MSCOCO)"),
      slurm=SlurmResources(gpus_per_node=1, cpus_per_task=12, time_min=24 * 60))
