package resources

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"podnet/api"
	"podnet/datastore"
)

// conflictRetries bounds the read-modify-write retries of Patch and Label
// when the resource changes under them.
const conflictRetries = 5

// Patch applies a JSON merge patch (RFC 7386), e.g.
// {"spec":{"disabled":true}}, to a resource and writes it back with the
// same rules as Replace. A metadata.resourceVersion in the patch makes
// it conditional on that revision; without one Patch retries when the
// resource changes between its read and its write. Unknown fields in
// the patch are rejected as in a document.
func (c *Client) Patch(ctx context.Context, kind, name string, patch []byte) (api.Resource, error) {
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, fmt.Errorf("patch is not valid JSON: %v", err)
	}
	pm, ok := p.(map[string]any)
	if !ok {
		return nil, errors.New("patch must be a JSON object, e.g. '{\"spec\":{\"disabled\":true}}'")
	}
	_, pinned := nested(pm, "metadata", "resourceVersion")
	return c.modify(ctx, kind, name, !pinned, func(cur api.Resource) (api.Resource, error) {
		b, err := json.Marshal(cur)
		if err != nil {
			return nil, err
		}
		var doc map[string]any
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&doc); err != nil {
			return nil, err
		}
		merged, _ := mergePatch(doc, pm).(map[string]any)
		if merged == nil {
			return nil, errors.New("patch removes the whole resource")
		}
		if n, _ := nested(merged, "metadata", "name"); n != name {
			return nil, fmt.Errorf("metadata.name cannot be patched (from %q to %v)", name, n)
		}
		if merged["kind"] != cur.ResourceKind() || merged["apiVersion"] != cur.GetTypeMeta().APIVersion {
			return nil, errors.New("apiVersion and kind cannot be patched")
		}
		out, err := json.Marshal(merged)
		if err != nil {
			return nil, err
		}
		rs, err := api.Decode(bytes.NewReader(out))
		if err != nil {
			var de *api.DecodeError
			if errors.As(err, &de) {
				err = de.Err // there is one document: the patched resource
			}
			return nil, fmt.Errorf("patched %s: %w", api.Key(cur), err)
		}
		return rs[0], nil
	})
}

// LabelOptions modify Label.
type LabelOptions struct {
	// Overwrite replaces the value of a label that is already set.
	Overwrite bool
	// Remove removes the label instead of setting it.
	Remove bool
}

// Label sets (or removes) one label of a resource, with calicoctl's
// rules: setting a label that exists needs Overwrite; removing one that
// does not exist is an error.
func (c *Client) Label(ctx context.Context, kind, name, key, value string, opts LabelOptions) (api.Resource, error) {
	if !opts.Remove {
		if err := api.ValidLabel(key, value); err != nil {
			return nil, err
		}
	}
	return c.modify(ctx, kind, name, true, func(cur api.Resource) (api.Resource, error) {
		m := cur.GetObjectMeta()
		old, has := m.Labels[key]
		switch {
		case opts.Remove && !has:
			return nil, fmt.Errorf("can not remove label of resource: label key %s is not found", key)
		case opts.Remove:
			delete(m.Labels, key)
		case has && old != value && !opts.Overwrite:
			return nil, fmt.Errorf("failed to update label of resource: key %s is already present. Please use '--overwrite' to set a new value", key)
		default:
			if m.Labels == nil {
				m.Labels = map[string]string{}
			}
			m.Labels[key] = value
		}
		return cur, nil
	})
}

// modify reads a resource, changes it with f and replaces it, retrying
// on a conflict when retry is set.
func (c *Client) modify(ctx context.Context, kind, name string, retry bool, f func(api.Resource) (api.Resource, error)) (api.Resource, error) {
	for i := 0; ; i++ {
		cur, err := c.Get(ctx, kind, name)
		if err != nil {
			return nil, err
		}
		next, err := f(cur)
		if err != nil {
			return nil, err
		}
		out, err := c.Replace(ctx, next)
		if err != nil && retry && i < conflictRetries && errors.Is(err, datastore.ErrConflict) {
			continue
		}
		return out, err
	}
}

// mergePatch applies an RFC 7386 merge patch to target.
func mergePatch(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergePatch(tm[k], v)
	}
	return tm
}

// nested reads m[k0][k1]...
func nested(m map[string]any, keys ...string) (any, bool) {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return v, true
}
