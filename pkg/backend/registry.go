package backend

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Options configure a Device when it is opened.
type Options struct {
	// Threads is the number of host threads the backend may compute with (0:
	// GOMAXPROCS). The CPU backend splits its loops over that many
	// goroutines; a GPU backend may ignore it.
	Threads int
	// ExpertCacheBytes is the device memory a backend that implements
	// ExpertCache may keep routed experts in (0: the backend's default,
	// negative: none).
	ExpertCacheBytes int64
	// ExpertCachePolicy names the replacement policy of that cache (one of
	// pkg/experts' Policies: "lru", "lfuda", "arc"; "" for its default).
	ExpertCachePolicy string
}

// OpenFunc opens a backend's Device. It returns an error (never panics) when
// the backend cannot run here: no driver, no device, too old a device.
type OpenFunc func(Options) (Device, error)

// Auto is the name Open accepts to pick the best available backend.
const Auto = "auto"

// Fallback is the backend Auto tries last: the one that runs everywhere.
const Fallback = "cpu"

var (
	mu       sync.Mutex
	registry = map[string]OpenFunc{}
)

// Register makes a backend available under name, normally from an init
// function of the backend's package. It panics on an empty or duplicate name,
// or the reserved name "auto".
func Register(name string, open OpenFunc) {
	mu.Lock()
	defer mu.Unlock()
	if name == "" || name == Auto || strings.ContainsAny(name, " ,:") {
		panic(fmt.Sprintf("backend: invalid name %q", name))
	}
	if open == nil {
		panic("backend: Register " + name + " with a nil open function")
	}
	if _, dup := registry[name]; dup {
		panic("backend: Register called twice for " + name)
	}
	registry[name] = open
}

// Names lists the registered backends in the order Auto tries them: every
// accelerator (any backend but Fallback) by name, then Fallback.
func Names() []string {
	mu.Lock()
	defer mu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		if (a == Fallback) != (b == Fallback) {
			if a == Fallback {
				return 1
			}
			return -1
		}
		return strings.Compare(a, b)
	})
	return names
}

// Open opens the named backend; name "auto" (or "") tries every registered
// backend in Names order and returns the first that opens, so an accelerator
// wins where it works and the CPU serves everywhere else. An unknown name is
// an error that lists the registered ones (a backend behind a build tag is
// not registered in a build without it).
func Open(name string, opts Options) (Device, error) {
	names := Names()
	if name == "" || name == Auto {
		if len(names) == 0 {
			return nil, errors.New("backend auto: no backend is registered in this build (import pkg/backend/cpu)")
		}
		var errs []error
		for _, n := range names {
			d, err := open(n, opts)
			if err == nil {
				return d, nil
			}
			errs = append(errs, err)
		}
		return nil, fmt.Errorf("backend auto: none of %s opened: %w", strings.Join(names, ", "), errors.Join(errs...))
	}
	mu.Lock()
	_, ok := registry[name]
	mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("backend %q is not in this build (registered: %s)", name, strings.Join(append(names, Auto), ", "))
	}
	return open(name, opts)
}

func open(name string, opts Options) (Device, error) {
	mu.Lock()
	f := registry[name]
	mu.Unlock()
	d, err := f(opts)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", name, err)
	}
	return d, nil
}
