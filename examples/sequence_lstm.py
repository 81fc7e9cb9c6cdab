"""Sequence classification with an LSTM, written as a plain PyTorch script (laid out like PyTorch's
tutorials: synthetic data set, model class, train loop, evaluation).

Each example is a noisy sine wave of one of four frequencies with a random phase; a bidirectional
two-layer LSTM reads it step by step and a linear layer names the frequency from the last hidden
states of both directions.

It runs under gpudl because of the import block below and nothing else: with ``gpudl`` written
``torch`` there (and ``gpudl.data`` ``torch.utils.data``) it runs under PyTorch
(tests/test_examples.py runs it both ways).

    .venv/bin/python examples/sequence_lstm.py                 # 5 epochs
    .venv/bin/python examples/sequence_lstm.py --batches 3     # a smoke test: 3 batches per loop
"""
import argparse
import math

# --- the imports: the only lines that differ from the PyTorch version ---------------------------------------
import gpudl as torch
from gpudl import nn
from gpudl.data import DataLoader, TensorDataset
# ------------------------------------------------------------------------------------------------------------


def make_waves(n, seq_len, num_classes):
    """``n`` sequences [n, seq_len, 1] and their class labels [n]."""
    freqs = torch.linspace(0.15, 0.6, num_classes)
    labels = torch.randint(0, num_classes, (n,))
    phase = torch.rand(n, 1) * 2 * math.pi
    steps = torch.arange(seq_len, dtype=torch.float32)
    waves = torch.sin(freqs[labels].unsqueeze(1) * steps + phase) + 0.4 * torch.randn(n, seq_len)
    return waves.unsqueeze(-1), labels


class SequenceClassifier(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers, num_classes):
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(hidden_size * 2, num_classes)

    def forward(self, x):
        h0 = torch.zeros(self.num_layers * 2, x.size(0), self.hidden_size).to(x.device)
        c0 = torch.zeros(self.num_layers * 2, x.size(0), self.hidden_size).to(x.device)
        out, (h_n, c_n) = self.lstm(x, (h0, c0))
        assert out.shape == (x.size(0), x.size(1), 2 * self.hidden_size)
        hidden = torch.cat((h_n[-2], h_n[-1]), dim=1)      # last layer, forward and backward
        return self.fc(hidden)


def train(loader, model, criterion, optimizer, device, max_batches):
    model.train()
    total_loss, steps = 0.0, 0
    for i, (sequences, labels) in enumerate(loader):
        if i == max_batches:
            break
        sequences, labels = sequences.to(device), labels.to(device)
        outputs = model(sequences)
        loss = criterion(outputs, labels)

        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        total_loss += loss.item()
        steps += 1
    return total_loss / steps


def evaluate(loader, model, device, max_batches):
    model.eval()
    correct, total = 0, 0
    with torch.no_grad():
        for i, (sequences, labels) in enumerate(loader):
            if i == max_batches:
                break
            sequences, labels = sequences.to(device), labels.to(device)
            outputs = model(sequences)
            _, predicted = torch.max(outputs, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    return correct / total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--batches", type=int, default=None, help="stop each loop after this many batches (CI)")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    num_classes, seq_len = 4, 40
    train_x, train_y = make_waves(2048, seq_len, num_classes)
    test_x, test_y = make_waves(512, seq_len, num_classes)
    train_loader = DataLoader(TensorDataset(train_x, train_y), batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(TensorDataset(test_x, test_y), batch_size=256, shuffle=False)

    model = SequenceClassifier(1, 32, 2, num_classes).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{n_params} parameters on {device}")

    for epoch in range(args.epochs):
        loss = train(train_loader, model, criterion, optimizer, device, args.batches)
        accuracy = evaluate(test_loader, model, device, args.batches)
        print(f"Epoch [{epoch + 1}/{args.epochs}], Loss: {loss:.4f}, Test accuracy: {100 * accuracy:.1f}%")
    print(f"Done! final accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
