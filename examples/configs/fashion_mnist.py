# MMEngine's tutorial 'Model' (FashionMNIST) as a config file, for the training entry
# point. Run it from the repository root, with examples/ on PYTHONPATH so that
# custom_imports finds the tutorial's classes:
#
#   PYTHONPATH=examples python -m fengine.train examples/configs/fashion_mnist.py
#   PYTHONPATH=examples torchrun --nproc-per-node=2 -m fengine.train \
#       examples/configs/fashion_mnist.py --launcher pytorch
#
# Shrink it from the command line, e.g. a quick synthetic run:
#   --cfg-options train_dataloader.dataset.data=synthetic train_dataloader.dataset.size=640
#                 val_dataloader.dataset.data=synthetic val_dataloader.dataset.size=200
#                 train_cfg.max_epochs=1 compile=False
custom_imports = dict(imports=['fashion_mnist_model'], allow_failed_imports=False)

model = dict(type='NeuralNetwork')

# The tutorial's DataLoader(dataset, batch_size=64): no shuffling. Under torchrun the
# sampler gives each process its own part of the data.
train_dataloader = dict(
    dataset=dict(type='FashionMNISTSplit', root='data', train=True, data='auto'),
    batch_size=64,
    sampler=dict(type='DefaultSampler', shuffle=False))
val_dataloader = dict(
    dataset=dict(type='FashionMNISTSplit', root='data', train=False, data='auto'),
    batch_size=64,
    sampler=dict(type='DefaultSampler', shuffle=False))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=1e-3))
train_cfg = dict(by_epoch=True, max_epochs=5, val_interval=1)
val_cfg = dict(fp16=True)
val_evaluator = dict(metrics=dict(type='FashionMnistMetric'))

# The forward, backward and SGD update of each step as one compiled graph.
compile = True
