package api

// IPAMConfigurationName is the only name an IPAMConfiguration may have.
const IPAMConfigurationName = "default"

// IPAMConfiguration is the cluster-wide IPAM configuration (calico.md
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
	// Needs StrictAffinity.
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

// Validate implements Resource.
func (c *IPAMConfiguration) Validate() error {
	var fe fieldErrors
	validateMeta(&fe, &c.ObjectMeta)
	if c.Name != "" && c.Name != IPAMConfigurationName {
		fe.add("Metadata.Name", c.Name, `Cannot create an IPAMConfiguration resource with a name other than "default"`)
	}
	if c.Spec.MaxBlocksPerHost < 0 {
		fe.add("IPAMConfiguration.Spec.MaxBlocksPerHost", c.Spec.MaxBlocksPerHost, "must not be negative")
	}
	if c.Spec.MaxBlocksPerHost > 0 && !c.Spec.StrictAffinity {
		fe.add("IPAMConfiguration.Spec.MaxBlocksPerHost", c.Spec.MaxBlocksPerHost, "MaxBlocksPerHost requires StrictAffinity to be enabled")
	}
	if !c.Spec.StrictAffinity && !c.AutoAllocate() {
		fe.add("IPAMConfiguration.Spec.AutoAllocateBlocks", false, "Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time")
	}
	return fe.err()
}
