package api

// IPAMConfigurationName is the only name an IPAMConfiguration may have.
const IPAMConfigurationName = "default"

// IPAMConfiguration is the cluster-wide IPAM configuration (docs/calico-conventions.md
// §2.4), a singleton named "default".
type IPAMConfiguration struct {
	TypeMeta
	ObjectMeta `json:"metadata"`
	Spec       IPAMConfigurationSpec `json:"spec"`
}

// IPAMConfigurationSpec has Calico's fields.
type IPAMConfigurationSpec struct {
	// StrictAffinity forbids borrowing addresses from other nodes' blocks.
	StrictAffinity bool `json:"strictAffinity"`
	// MaxBlocksPerHost limits the blocks one node may claim; 0 = no limit.
	// A node at the limit gets no address even when it could borrow one,
	// whatever StrictAffinity says (as in Calico).
	MaxBlocksPerHost int `json:"maxBlocksPerHost,omitempty"`
	// AutoAllocateBlocks lets a node claim new blocks; nil means true.
	AutoAllocateBlocks *bool `json:"autoAllocateBlocks,omitempty"`
}

// NewIPAMConfiguration returns an IPAMConfiguration named name.
func NewIPAMConfiguration(name string) *IPAMConfiguration {
	return &IPAMConfiguration{TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindIPAMConfiguration}, ObjectMeta: ObjectMeta{Name: name}}
}

// ResourceKind implements Resource.
func (*IPAMConfiguration) ResourceKind() string { return KindIPAMConfiguration }

// SetDefaults implements Resource: autoAllocateBlocks true.
func (c *IPAMConfiguration) SetDefaults() {
	if c.Spec.AutoAllocateBlocks == nil {
		t := true
		c.Spec.AutoAllocateBlocks = &t
	}
}

// AutoAllocate reports Spec.AutoAllocateBlocks with its default.
func (c *IPAMConfiguration) AutoAllocate() bool {
	return c.Spec.AutoAllocateBlocks == nil || *c.Spec.AutoAllocateBlocks
}

// Validate implements Resource with the rules Calico applies to the
// resource: its name, and MaxBlocksPerHost ≥ 0. Calico's `ipam
// configure` (podnet ipam configure, ipam.Config.Check) also refuses
// MaxBlocksPerHost without StrictAffinity and turning off both
// StrictAffinity and AutoAllocateBlocks, but the resource is accepted
// with either, as Calico's own sample (strictAffinity: false,
// maxBlocksPerHost: 4) is, and IPAM honours each field as it stands.
func (c *IPAMConfiguration) Validate() error {
	var fe fieldErrors
	validateMeta(&fe, &c.ObjectMeta)
	if c.Name != "" && c.Name != IPAMConfigurationName {
		fe.add("Metadata.Name", c.Name, `Cannot create an IPAMConfiguration resource with a name other than "default"`)
	}
	if c.Spec.MaxBlocksPerHost < 0 {
		fe.add("IPAMConfiguration.Spec.MaxBlocksPerHost", c.Spec.MaxBlocksPerHost, "must be greater than or equal to 0")
	}
	return fe.err()
}
