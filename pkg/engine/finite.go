package engine

import "github.com/fm-moe/fm/pkg/model"

// NonFiniteError reports NaN or ±Inf in the forward pass: the weights or the
// activations are damaged (bit rot, a hand-edited manifest), and whatever
// would be sampled or written from them is garbage. model.Forward checks the
// residual stream after every block and the logits it returns, so Generate,
// Logits and the server stop with this error, naming the layer, block and
// routed expert (or the output head) and the token position.
type NonFiniteError = model.NonFiniteError
