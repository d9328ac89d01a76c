package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names in a prepared model directory (and in HF checkpoints).
const (
	BinaryFile       = "tokenizer.bin"
	VocabFile        = "vocab.bin"
	JSONFile         = "tokenizer.json"
	ConfigFile       = "tokenizer_config.json"
	ChatTemplateFile = "chat_template.jinja"
)

// Load opens a tokenizer from a directory (a prepared model directory or a
// checkpoint: tokenizer.bin is preferred, tokenizer.json is the fallback) or
// from a tokenizer.json / tokenizer.bin file. The chat template comes from
// chat_template.jinja or tokenizer_config.json's chat_template next to it,
// and tokenizer_config.json's eos_token joins the stop tokens; what these
// files do not say is taken from tokenizer.bin when it recorded it.
func Load(path string) (*Tokenizer, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	dir, file := path, ""
	if info.IsDir() {
		for _, name := range []string{BinaryFile, JSONFile} {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				file = filepath.Join(dir, name)
				break
			}
		}
		if file == "" {
			return nil, fmt.Errorf("%s: no %s or %s in the directory", path, BinaryFile, JSONFile)
		}
	} else {
		dir, file = filepath.Dir(path), path
	}
	t, err := loadFile(file)
	if err != nil {
		return nil, err
	}
	chat, err := readChatConfig(dir)
	if err != nil {
		return nil, err
	}
	// Files next to the tokenizer win; what tokenizer.bin recorded fills in
	// what they lack (a prepared directory may hold tokenizer_config.json
	// without the chat_template.jinja it came with).
	if chat.template != "" {
		t.chat.template, t.chat.source = chat.template, chat.source
	}
	if chat.eosToken != "" {
		t.chat.eosToken = chat.eosToken
	}
	return t, nil
}

// loadFile reads a tokenizer.bin or tokenizer.json, telling them apart by the
// magic, and names the file in errors.
func loadFile(file string) (*Tokenizer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var t *Tokenizer
	if bytes.HasPrefix(data, []byte(binaryMagic)) {
		t, err = parseBinary(data)
	} else {
		t, err = parseJSON(data)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return t, nil
}

// readChatConfig reads chat formatting settings from a directory: empty
// fields for files that are absent.
func readChatConfig(dir string) (c chatConfig, err error) {
	configPath := filepath.Join(dir, ConfigFile)
	data, err := os.ReadFile(configPath)
	switch {
	case err == nil:
		var cfg struct {
			EOSToken     json.RawMessage `json:"eos_token"`
			ChatTemplate json.RawMessage `json:"chat_template"`
		}
		if err := json.Unmarshal(data, &cfg); err != nil {
			return c, fmt.Errorf("%s: %w", configPath, err)
		}
		c.eosToken = tokenContent(cfg.EOSToken)
		if tpl, ok := templateText(cfg.ChatTemplate); ok {
			c.template, c.source = tpl, configPath
		}
	case !errors.Is(err, fs.ErrNotExist):
		return c, err
	}
	// chat_template.jinja is what newer transformers save, and wins.
	jinjaPath := filepath.Join(dir, ChatTemplateFile)
	tpl, err := os.ReadFile(jinjaPath)
	switch {
	case err == nil:
		c.template, c.source = string(tpl), jinjaPath
	case !errors.Is(err, fs.ErrNotExist):
		return c, err
	}
	return c, nil
}

// tokenContent reads a token given either as a string or as an AddedToken
// object {"content": ...}.
func tokenContent(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Content
	}
	return ""
}

// templateText reads chat_template, a string or a list of named templates
// (the one named "default" is used).
func templateText(raw json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if json.Unmarshal(raw, &named) == nil {
		for _, n := range named {
			if n.Name == "default" {
				return n.Template, true
			}
		}
	}
	return "", false
}
