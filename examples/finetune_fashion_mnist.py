"""Fine-tuning: pretrain the Fashion-MNIST CNN on classes 0-4, then train only its classifier head on 5-9.

    python examples/finetune_fashion_mnist.py                             # all the data: minutes on a CPU
    python examples/finetune_fashion_mnist.py --limit 3000 --epochs 1     # a quick look

The convolutional features learnt on T-shirts, trousers, pullovers, dresses and coats are kept
(frozen) and reused for sandals, shirts, sneakers, bags and ankle boots: only the last Linear layer
is trained. The command line does the same with the CNN of a previous ``gpudl train cnn`` run:

    gpudl train cnn --init-from runs/cnn/1/checkpoint.npz --freeze 0 3 7
"""
import argparse
import tempfile
from pathlib import Path

import gpudl
from gpudl import models, nn, optim
from gpudl.data import DataLoader, FashionMNIST, Subset
from gpudl.finetune import freeze, load_weights, trainable_parameters
from gpudl.train import evaluate, fit

OLD, NEW = (0, 4), (5, 9)  # the classes of pretraining and of fine-tuning (first, last)


def of_classes(dataset, first, last):
    """The examples of ``dataset`` whose label lies in first..last."""
    labels = dataset.targets
    return Subset(dataset, ((labels >= first) & (labels <= last)).nonzero()[0])


def train(model, examples, epochs, batch_size, lr, checkpoint=None):
    """Adam on the parameters of ``model`` that require grad, for ``epochs`` epochs over ``examples``."""
    optimizer = optim.Adam(trainable_parameters(model), lr=lr)
    loader = DataLoader(examples, batch_size=batch_size, shuffle=True, seed=0)
    fit(model, nn.functional.softmax_cross_entropy, optimizer, loader, epochs=epochs, checkpoint=checkpoint,
        progress=False)


def accuracy(model, examples):
    """Test accuracy of ``model`` over ``examples``, in percent."""
    return 100 * evaluate(model, nn.functional.softmax_cross_entropy, DataLoader(examples, batch_size=1024))[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Fashion-MNIST folder (default: $GPUDL_DATA, else the "
                                                     "Debian package's)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N training and test examples")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of pretraining and of fine-tuning")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    gpudl.manual_seed(0)
    train_set = FashionMNIST(root=args.data, split="train", limit=args.limit)
    test_set = FashionMNIST(root=args.data, split="test", limit=args.limit)

    pretrained = models.CNN()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "pretrained.npz"
        train(pretrained, of_classes(train_set, *OLD), args.epochs, args.batch_size, 1e-3, checkpoint)
        print(f"pretrained on classes {OLD[0]}-{OLD[1]}: test accuracy on them "
              f"{accuracy(pretrained, of_classes(test_set, *OLD)):.2f}%")

        model = load_weights(models.CNN(), checkpoint)
    head = str(len(model) - 1)
    frozen = freeze(model, sorted({name.split(".")[0] for name, _ in model.named_parameters()} - {head}))
    new_test = of_classes(test_set, *NEW)
    before = accuracy(model, new_test)
    # A larger step for the head alone: it must unlearn classes 0-4 and has few weights to move.
    train(model, of_classes(train_set, *NEW), args.epochs, args.batch_size, 1e-2)
    trained = sum(p.numel() for p in trainable_parameters(model))
    print(f"froze {', '.join(frozen)}; fine-tuned the head ({head}.weight, {head}.bias: {trained:,} of "
          f"{sum(p.numel() for p in model.parameters()):,} weights) on classes {NEW[0]}-{NEW[1]}")
    print(f"test accuracy on classes {NEW[0]}-{NEW[1]}: {before:.2f}% before fine-tuning, "
          f"{accuracy(model, new_test):.2f}% after")


if __name__ == "__main__":
    main()
