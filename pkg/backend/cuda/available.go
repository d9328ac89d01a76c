//go:build cuda && linux

package cuda

// Available opens the device (once) and reports why it cannot be used, nil
// when it can.
func Available() error {
	_, err := Open()
	return err
}
