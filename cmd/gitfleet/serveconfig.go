package main

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/mail"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	envprovider "github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/clientip"
	"github.com/gitfleet/gitfleet/controller/configartifact"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/deviceconfig"
	"github.com/gitfleet/gitfleet/controller/notifier"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/policies"
	"github.com/gitfleet/gitfleet/schema/didyoumean"
	"github.com/gitfleet/gitfleet/webhooks/notify"
	"go.yaml.in/yaml/v3"
)

// serveConfig is everything `gitfleet serve` takes. Each setting comes, in
// rising precedence, from its default, the config file (--config, YAML, keys
// as in the yaml tags), the environment (GITFLEET_ plus the key in upper
// snake case, e.g. GITFLEET_WEBHOOK_SECRET), and the command line.
// Secrets can also be given as files (…_file keys), so they stay out of
// process listings and shell history.
type serveConfig struct {
	Repo                string        `yaml:"repo" flag:"repo" secret:"url" help:"fleet repository URL (file://, https://, ssh://)"`
	Branch              string        `yaml:"branch" flag:"branch" help:"branch (or tag) to follow"`
	RepoUsername        string        `yaml:"repo_username" flag:"repo-username" help:"HTTPS username (default x-access-token when a token is given)"`
	RepoToken           string        `yaml:"repo_token" flag:"repo-token" secret:"true" help:"HTTPS token or password"`
	RepoTokenFile       string        `yaml:"repo_token_file" flag:"repo-token-file" help:"file holding the HTTPS token"`
	RepoSSHKey          string        `yaml:"repo_ssh_key" flag:"repo-ssh-key" help:"SSH private key file for ssh:// repositories"`
	RepoKnownHosts      string        `yaml:"repo_known_hosts" flag:"repo-known-hosts" help:"known_hosts file pinning the SSH host key"`
	RepoCA              string        `yaml:"repo_ca" flag:"repo-ca" help:"PEM CA bundle to trust for the HTTPS repository"`
	CommitKeys          string        `yaml:"commit_keys" flag:"commit-keys" help:"armored OpenPGP keyring: when set, every new commit must be signed by one of its keys"`
	PollInterval        time.Duration `yaml:"poll_interval" flag:"poll-interval" help:"how often to fetch the repository without a webhook"`
	ArtifactStore       string        `yaml:"artifact_store" flag:"artifact-store" help:"directory holding the artifact files that Artifact manifests name by path (https sources need none)"`
	PublicURL           string        `yaml:"public_url" flag:"public-url" help:"https://host[:port] devices reach the controller at, the base of download URLs (default: derived from --listen when it names a host, or from a single --hostname; without either, serve refuses to start)"`
	Redis               string        `yaml:"redis" flag:"redis" secret:"url" help:"Redis URL (redis://, rediss://; several comma-separated for a cluster); empty: the embedded store in --data-dir"`
	DataDir             string        `yaml:"data_dir" flag:"data-dir" help:"directory for the local clone, the embedded store and the development certificate"`
	Listen              string        `yaml:"listen" flag:"listen" help:"HTTPS address for devices, webhooks and the management API"`
	TLSCert             string        `yaml:"tls_cert" flag:"tls-cert" help:"TLS certificate (PEM); without it a self-signed development certificate is made"`
	TLSKey              string        `yaml:"tls_key" flag:"tls-key" help:"TLS private key (PEM)"`
	Hostnames           []string      `yaml:"hostnames" flag:"hostname" help:"host names the development certificate covers (repeatable)"`
	WebhookSecret       string        `yaml:"webhook_secret" flag:"webhook-secret" secret:"true" help:"secret Git host webhooks are signed with"`
	WebhookSecretFile   string        `yaml:"webhook_secret_file" flag:"webhook-secret-file" help:"file holding the webhook secret"`
	WebhookRate         float64       `yaml:"webhook_rate" flag:"webhook-rate" help:"refused webhook requests (bad signature, malformed) per second allowed from one source address before it gets 429; verified deliveries do not count"`
	WebhookBurst        int           `yaml:"webhook_burst" flag:"webhook-burst" help:"refused webhook requests one source may send at once before --webhook-rate applies"`
	MaxPendingDevices   int           `yaml:"max_pending_devices" flag:"max-pending-devices" help:"most pending device records kept; auth requests of new unknown devices get 503 beyond (accepted devices are not affected)"`
	PendingTTL          time.Duration `yaml:"pending_ttl" flag:"pending-ttl" help:"how long a pending device or key conflict record is kept after it was last seen"`
	DeviceAuthRate      float64       `yaml:"device_auth_rate" flag:"device-auth-rate" help:"auth requests per second of devices that are not accepted allowed from one source address (429 beyond)"`
	DeviceAuthBurst     int           `yaml:"device_auth_burst" flag:"device-auth-burst" help:"auth requests of devices that are not accepted one source may send at once before --device-auth-rate applies"`
	MaxConnsPerSource   int           `yaml:"max_conns_per_source" flag:"max-conns-per-source" help:"connections one source address may hold open at once (IPv6 by /64; devices behind one NAT share an address; trusted proxies are not limited); -1: no limit"`
	TrustedProxies      []string      `yaml:"trusted_proxies" flag:"trusted-proxy" help:"address or CIDR prefix of a reverse proxy whose X-Forwarded-For names the client (repeatable); per-source limits then count the client, not the proxy"`
	ManagementToken     string        `yaml:"management_token" flag:"management-token" secret:"true" help:"bearer token for the read-only management API"`
	ManagementTokenFile string        `yaml:"management_token_file" flag:"management-token-file" help:"file holding the management token"`
	PolicyTimeout       time.Duration `yaml:"policy_timeout" flag:"policy-timeout" help:"wall-clock time the repository's own policies/*.cue may take at one commit; a commit over it is refused, naming the policy file"`
	PolicyMemory        string        `yaml:"policy_memory" flag:"policy-memory" help:"memory the repository's own policies may use at one commit (such as 1GiB); a commit over it is refused"`
	PolicyOutput        string        `yaml:"policy_output" flag:"policy-output" help:"size of the violations and errors the repository's own policies may report (such as 8MiB)"`
	ConfigSecretsDir    string        `yaml:"config_secrets_dir" flag:"config-secrets-dir" help:"directory holding the files that DeviceConfig secrets name (secrets: {KEY: {file: NAME}}); a commit with a secret the controller cannot resolve is refused"`
	ConfigAgeIdentity   string        `yaml:"config_age_identity" flag:"config-age-identity" help:"age identity file (age-keygen -o FILE; mode 0600) that decrypts DeviceConfig secrets encrypted with age -a -r RECIPIENT (secrets: {KEY: {age: ...}})"`
	ConfigSigningKey    string        `yaml:"config_signing_key" flag:"config-signing-key" help:"private key file (PEM, mode 0600; gitfleet keys generate) that signs the mender-configure artifacts stock Mender clients get their configuration in; its public half must be a SigningKey in the fleet repository, or none is offered. Without it they are unsigned, as Mender's server makes them, and clients that verify signatures refuse them"`
	ConfigSignKeyName   string        `yaml:"config_signing_key_name" flag:"config-signing-key-name" help:"name of the SigningKey that must declare --config-signing-key (default: any SigningKey with its fingerprint)"`
	SMTPAddr            string        `yaml:"smtp_addr" flag:"smtp-addr" help:"SMTP submission server host:port that e-mail Notifications go through (STARTTLS required); empty: e-mail Notifications send nothing and are reported in the log and the gitfleet_notification_problems metric"`
	SMTPFrom            string        `yaml:"smtp_from" flag:"smtp-from" help:"sender address of notification mail (required with --smtp-addr)"`
	SMTPUsername        string        `yaml:"smtp_username" flag:"smtp-username" help:"SMTP user name (AUTH PLAIN, inside TLS only); goes with --smtp-password-file"`
	SMTPPasswordFile    string        `yaml:"smtp_password_file" flag:"smtp-password-file" help:"file holding the SMTP password (there is no password flag: it would show in process listings)"`
	SMTPDigestWindow    time.Duration `yaml:"smtp_digest_window" flag:"smtp-digest-window" help:"events arriving within this long after the first go into one digest mail"`
	SMTPInsecure        bool          `yaml:"smtp_insecure_plaintext" flag:"smtp-insecure-plaintext" help:"for tests only: send notification mail without STARTTLS to a server that offers none (never with --smtp-username)"`
	DebugListen         string        `yaml:"debug_listen" flag:"debug-listen" help:"loopback address for Go's pprof profiles (e.g. 127.0.0.1:6060); empty: off"`
	LogLevel            string        `yaml:"log_level" flag:"log-level" help:"debug, info, warn or error"`
	LogFormat           string        `yaml:"log_format" flag:"log-format" help:"json (one JSON object a line on stderr) or text (key=value)"`

	// Unexported fields are derived, not settings: no flag, key or
	// variable of their own.
	smtpPassword  string                  // read from SMTPPasswordFile
	ageIdentities deviceconfig.Identities // read from ConfigAgeIdentity by validate
	configSigner  *artifact.Signer        // read from ConfigSigningKey by validate
}

func defaultServeConfig() serveConfig {
	return serveConfig{
		Branch:       "main",
		PollInterval: time.Minute,
		DataDir:      ".gitfleet",
		Listen:       ":8443",
		WebhookRate:  1,
		WebhookBurst: 20,

		MaxPendingDevices: store.DefaultMaxPending,
		PendingTTL:        store.DefaultPendingTTL,
		DeviceAuthRate:    float64(deviceapi.DefaultUnknownRate),
		DeviceAuthBurst:   deviceapi.DefaultUnknownBurst,
		MaxConnsPerSource: controller.DefaultMaxConnsPerSource,
		PolicyTimeout:     policies.DefaultTime,
		PolicyMemory:      (*sizeFlag)(ptr(int64(policies.DefaultMemory))).String(),
		PolicyOutput:      (*sizeFlag)(ptr(int64(policies.DefaultOutput))).String(),
		SMTPDigestWindow:  time.Minute,
		LogLevel:          "info",
		LogFormat:         "json",
	}
}

// bindFlags declares one flag per field from its tags.
func (c *serveConfig) bindFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML config file (keys as the flags, with _ for -)")
	v := reflect.ValueOf(c).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		name, help := f.Tag.Get("flag"), f.Tag.Get("help")
		switch p := v.Field(i).Addr().Interface().(type) {
		case *string:
			fs.StringVar(p, name, *p, help)
		case *time.Duration:
			fs.DurationVar(p, name, *p, help)
		case *[]string:
			fs.StringArrayVar(p, name, *p, help)
		case *float64:
			fs.Float64Var(p, name, *p, help)
		case *int:
			fs.IntVar(p, name, *p, help)
		case *bool:
			fs.BoolVar(p, name, *p, help)
		}
	}
}

// loadServeConfig resolves the settings with koanf: the defaults, then
// the config file, then the environment (GITFLEET_ and the key in upper
// case; unknown and empty variables are ignored: other commands read
// GITFLEET_ variables too), then the flags the user set. Each layer is
// checked on its own before it is merged, so that an error names where
// the bad value came from: the file and line, the variable, or the flag.
func loadServeConfig(fs *pflag.FlagSet, environ func() []string) (serveConfig, error) {
	cfg := defaultServeConfig()
	known := cfg.keys()
	merged := koanf.New(".")

	if path, _ := fs.GetString("config"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		p := &yamlParser{known: known, lines: map[string]int{}, values: map[string]string{}}
		k := koanf.New(".")
		if err := k.Load(rawBytes(data), p); err != nil {
			return cfg, fmt.Errorf("config %s%w", path, err)
		}
		if err := checkLayer(k, func(key string) string {
			return fmt.Sprintf("config %s:%d: %s %s", path, p.lines[key], key, p.values[key])
		}); err != nil {
			return cfg, err
		}
		merged.Merge(k)
	}

	raw := map[string]string{}
	env := koanf.New(".")
	if err := env.Load(envprovider.Provider("", envprovider.Opt{
		Prefix:      "GITFLEET_",
		EnvironFunc: environ,
		TransformFunc: func(name, val string) (string, any) {
			key := strings.ToLower(strings.TrimPrefix(name, "GITFLEET_"))
			if _, ok := known[key]; !ok || val == "" {
				return "", nil
			}
			raw[key] = name + "=" + strconv.Quote(val)
			if f := known[key]; f.Type == reflect.TypeFor[[]string]() {
				return key, strings.Split(val, ",")
			}
			return key, val
		},
	}), nil); err != nil {
		return cfg, fmt.Errorf("environment: %w", err)
	}
	if err := checkLayer(env, func(key string) string { return raw[key] }); err != nil {
		return cfg, err
	}
	merged.Merge(env)

	flags := koanf.New(".")
	byFlag := map[string]string{}
	for key, f := range known {
		byFlag[f.Tag.Get("flag")] = key
	}
	if err := flags.Load(posflag.ProviderWithFlag(fs, ".", nil, func(f *pflag.Flag) (string, any) {
		return byFlag[f.Name], posflag.FlagVal(fs, f) // "" (--config): not a setting
	}), nil); err != nil {
		return cfg, fmt.Errorf("flags: %w", err)
	}
	if err := checkLayer(flags, func(key string) string { return "--" + known[key].Tag.Get("flag") }); err != nil {
		return cfg, err
	}
	merged.Merge(flags)

	if err := decodeSettings(merged.All(), &cfg); err != nil {
		return cfg, err // each layer decoded on its own: not expected
	}
	return cfg, cfg.resolveSecretFiles()
}

// keys maps each setting's config key (its yaml tag) to its field.
func (c *serveConfig) keys() map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	t := reflect.TypeOf(c).Elem()
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.IsExported() {
			out[f.Tag.Get("yaml")] = f
		}
	}
	return out
}

// decodeSettings sets the fields of cfg named by m's keys (yaml tags),
// converting strings (from the environment, or quoted in YAML) to
// durations, numbers and booleans, and splitting them at commas for lists.
func decodeSettings(m map[string]any, cfg *serveConfig) error {
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		TagName:          "yaml",
		Result:           cfg,
	})
	if err != nil {
		return err
	}
	return d.Decode(m)
}

// checkLayer decodes each setting of one layer on its own and names a bad
// one as where(key) says.
func checkLayer(k *koanf.Koanf, where func(key string) string) error {
	for _, key := range k.Keys() {
		scratch := defaultServeConfig()
		if err := decodeSettings(map[string]any{key: k.Get(key)}, &scratch); err != nil {
			var de *mapstructure.DecodeError
			if errors.As(err, &de) {
				err = de.Unwrap()
			}
			return fmt.Errorf("%s: %w", where(key), err)
		}
	}
	return nil
}

// rawBytes is a koanf.Provider of bytes already read.
type rawBytes []byte

func (b rawBytes) ReadBytes() ([]byte, error)  { return b, nil }
func (rawBytes) Read() (map[string]any, error) { return nil, errors.New("rawBytes needs a parser") }

// yamlParser is a koanf.Parser, over go.yaml.in/yaml/v3, of serve's config
// file: one YAML mapping of known keys. Its errors start with ":LINE: ",
// to follow the file name; it records the line of each key, so that a bad
// value can be reported where it is.
type yamlParser struct {
	known  map[string]reflect.StructField
	lines  map[string]int
	values map[string]string // as written, quoted
}

func (p *yamlParser) Unmarshal(data []byte) (map[string]any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf(": %w", err) // yaml's errors name the line
	}
	out := map[string]any{}
	if len(doc.Content) == 0 {
		return out, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf(":%d: want key: value lines (a YAML mapping) at the top", root.Line)
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if _, ok := p.known[k.Value]; !ok {
			return nil, fmt.Errorf(":%d: unknown key %q%s", k.Line, k.Value, p.suggest(k.Value))
		}
		var val any
		if err := v.Decode(&val); err != nil {
			return nil, fmt.Errorf(":%d: %s: %w", v.Line, k.Value, err)
		}
		out[k.Value] = val
		p.lines[k.Value] = k.Line
		p.values[k.Value] = strconv.Quote(v.Value)
		if v.Kind != yaml.ScalarNode {
			p.values[k.Value] = "(a YAML " + kindName(v.Kind) + ")"
		}
	}
	return out, nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	}
	return "value"
}

func (*yamlParser) Marshal(map[string]any) ([]byte, error) {
	return nil, errors.New("serve's config is only read")
}

// suggest names the known key closest to an unknown one, if one is close.
func (p *yamlParser) suggest(key string) string {
	if best := didyoumean.Closest(key, slices.Sorted(maps.Keys(p.known))); best != "" {
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
	return " (the keys are the settings' names in gitfleet serve --help, with _ for -)"
}

func (c *serveConfig) resolveSecretFiles() error {
	for _, p := range []struct {
		file  string
		value *string
		name  string
	}{
		{c.RepoTokenFile, &c.RepoToken, "repo_token_file"},
		{c.WebhookSecretFile, &c.WebhookSecret, "webhook_secret_file"},
		{c.ManagementTokenFile, &c.ManagementToken, "management_token_file"},
		{c.SMTPPasswordFile, &c.smtpPassword, "smtp_password_file"},
	} {
		if p.file == "" {
			continue
		}
		data, err := os.ReadFile(p.file)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		*p.value = strings.TrimSpace(string(data))
	}
	return nil
}

// validate reports every problem with the settings at once.
func (c *serveConfig) validate() error {
	var errs []error
	if c.Repo == "" {
		errs = append(errs, errors.New("the fleet repository is required: --repo URL (or GITFLEET_REPO, or repo: in --config)"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.PollInterval < time.Second {
		errs = append(errs, fmt.Errorf("--poll-interval %s is too short (at least 1s)", c.PollInterval))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("--log-format %q: use json or text", c.LogFormat))
	}
	if c.WebhookRate <= 0 || c.WebhookBurst < 1 {
		errs = append(errs, fmt.Errorf("--webhook-rate (%g) must be > 0 and --webhook-burst (%d) at least 1", c.WebhookRate, c.WebhookBurst))
	}
	if c.DebugListen != "" {
		if host, _, err := net.SplitHostPort(c.DebugListen); err != nil || !net.ParseIP(host).IsLoopback() {
			errs = append(errs, fmt.Errorf("--debug-listen %q: give a loopback address such as 127.0.0.1:6060 (profiles must not be exposed)", c.DebugListen))
		}
	}
	if c.PublicURL != "" {
		if err := controller.CheckPublicURL(c.PublicURL); err != nil {
			errs = append(errs, fmt.Errorf("--public-url: %w", err))
		}
	} else if _, err := publicHost(*c); err != nil {
		errs = append(errs, err)
	}
	if _, err := clientip.ParseTrusted(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("--trusted-proxy: %w", err))
	}
	if c.MaxConnsPerSource == 0 || c.MaxConnsPerSource < -1 {
		errs = append(errs, fmt.Errorf("--max-conns-per-source %d: give a positive number, or -1 for no limit", c.MaxConnsPerSource))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if _, err := c.policyBudget(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateSMTP()...)
	errs = append(errs, c.validateDeviceConfig()...)
	errs = append(errs, c.validateConfigSigning()...)
	return errors.Join(errs...)
}

// validateDeviceConfig checks where DeviceConfig secrets come from, and
// reads the age identity file (refusing one others may read).
func (c *serveConfig) validateDeviceConfig() []error {
	var errs []error
	if c.ConfigSecretsDir != "" {
		if fi, err := os.Stat(c.ConfigSecretsDir); err != nil {
			errs = append(errs, fmt.Errorf("--config-secrets-dir: %w", err))
		} else if !fi.IsDir() {
			errs = append(errs, fmt.Errorf("--config-secrets-dir %s is not a directory", c.ConfigSecretsDir))
		}
	}
	c.ageIdentities = nil
	if c.ConfigAgeIdentity != "" {
		ids, err := deviceconfig.LoadIdentities(c.ConfigAgeIdentity)
		if err != nil {
			errs = append(errs, fmt.Errorf("--config-age-identity: %w", err))
		}
		c.ageIdentities = ids
	}
	return errs
}

// validateConfigSigning reads the configuration signing key, refusing one
// others may read.
func (c *serveConfig) validateConfigSigning() []error {
	c.configSigner = nil
	if c.ConfigSigningKey == "" {
		if c.ConfigSignKeyName != "" {
			return []error{errors.New("--config-signing-key-name needs --config-signing-key FILE")}
		}
		return nil
	}
	fi, err := os.Stat(c.ConfigSigningKey)
	if err != nil {
		return []error{fmt.Errorf("--config-signing-key: %w", err)}
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return []error{fmt.Errorf("--config-signing-key %s is accessible by others (mode %04o): it is a private key; chmod 600 %s", c.ConfigSigningKey, perm, c.ConfigSigningKey)}
	}
	s, err := loadSigner("--config-signing-key", c.ConfigSigningKey)
	if err != nil {
		return []error{err}
	}
	c.configSigner = s
	return nil
}

// configure returns what serves stock Mender clients their configuration
// (deviceapi.Options.Configure).
func (c serveConfig) configure(log *slog.Logger) (*deviceapi.Configure, error) {
	if c.configSigner == nil {
		log.Warn("no --config-signing-key: the mender-configure artifacts of stock Mender clients are unsigned (as Mender's server makes them); clients that verify signatures (ArtifactVerifyKey) refuse them")
	} else {
		log.Info("mender-configure artifacts are signed; a SigningKey in the fleet repository must declare the key",
			"fingerprint", c.configSigner.Verifier().Fingerprint(), "signing_key", c.ConfigSignKeyName)
	}
	return deviceapi.NewConfigure(deviceapi.ConfigureOptions{
		Artifacts: configartifact.NewCache(0, c.configSigner),
		KeyName:   c.ConfigSignKeyName,
	})
}

// deviceConfig returns where the controller finds DeviceConfig secrets.
func (c serveConfig) deviceConfig() deviceconfig.Options {
	return deviceconfig.Options{SecretsDir: c.ConfigSecretsDir, Identities: c.ageIdentities}
}

// validateSMTP checks the settings of notification mail.
func (c *serveConfig) validateSMTP() []error {
	var errs []error
	if c.SMTPAddr == "" {
		if c.SMTPFrom != "" || c.SMTPUsername != "" || c.SMTPPasswordFile != "" || c.SMTPInsecure {
			errs = append(errs, errors.New("--smtp-from, --smtp-username, --smtp-password-file and --smtp-insecure-plaintext need --smtp-addr host:port"))
		}
		return errs
	}
	host, port, err := net.SplitHostPort(c.SMTPAddr)
	if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
		errs = append(errs, fmt.Errorf("--smtp-addr %q: give host:port, such as smtp.example.com:587", c.SMTPAddr))
	}
	if c.SMTPFrom == "" {
		errs = append(errs, errors.New("--smtp-addr needs --smtp-from, the sender address of notification mail"))
	} else if _, err := mail.ParseAddress(c.SMTPFrom); err != nil {
		errs = append(errs, fmt.Errorf("--smtp-from %q: %v", c.SMTPFrom, err))
	}
	if (c.SMTPUsername == "") != (c.SMTPPasswordFile == "") {
		errs = append(errs, errors.New("--smtp-username and --smtp-password-file go together"))
	}
	if c.SMTPInsecure && c.SMTPUsername != "" {
		errs = append(errs, errors.New("--smtp-insecure-plaintext with --smtp-username: credentials are never sent without TLS; drop one"))
	}
	if c.SMTPDigestWindow < time.Second {
		errs = append(errs, fmt.Errorf("--smtp-digest-window %s is too short (at least 1s)", c.SMTPDigestWindow))
	}
	return errs
}

// smtp returns the notifier's SMTP settings.
func (c serveConfig) smtp() notifier.SMTP {
	if c.SMTPAddr == "" {
		return notifier.SMTP{}
	}
	return notifier.SMTP{Addr: c.SMTPAddr, From: c.SMTPFrom, Username: c.SMTPUsername,
		Password: notify.Secret(c.smtpPassword), DigestWindow: c.SMTPDigestWindow, AllowPlaintext: c.SMTPInsecure}
}

// policyBudget returns the budget of the repository's own policies.
func (c *serveConfig) policyBudget() (policies.Budget, error) {
	b := policies.Budget{Time: c.PolicyTimeout}
	if err := (*sizeFlag)(&b.Memory).Set(c.PolicyMemory); err != nil {
		return b, fmt.Errorf("--policy-memory: %w", err)
	}
	if err := (*sizeFlag)(&b.Output).Set(c.PolicyOutput); err != nil {
		return b, fmt.Errorf("--policy-output: %w", err)
	}
	return b, checkBudget(b)
}

func ptr[T any](v T) *T { return &v }

// settings lists the settings that are set, by their config key, with
// secrets redacted: settings tagged secret:"true" show as <redacted>,
// those tagged secret:"url" without the URL's user information.
func (c serveConfig) settings() [][2]string {
	var out [][2]string
	v := reflect.ValueOf(c)
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		val := fmt.Sprint(v.Field(i).Interface())
		switch f.Tag.Get("secret") {
		case "true":
			if val != "" {
				val = redactedText
			}
		case "url":
			val = redactURL(val)
		}
		if val == "" || val == "[]" || f.Type.Kind() == reflect.Bool && val == "false" {
			continue
		}
		out = append(out, [2]string{f.Tag.Get("yaml"), val})
	}
	return out
}

// String renders the settings for humans, with secrets redacted.
func (c serveConfig) String() string {
	var b strings.Builder
	for _, kv := range c.settings() {
		fmt.Fprintf(&b, "%s=%s ", kv[0], strconv.Quote(kv[1]))
	}
	return strings.TrimSpace(b.String())
}

// LogValue logs the settings as a group, with secrets redacted.
func (c serveConfig) LogValue() slog.Value {
	var attrs []slog.Attr
	for _, kv := range c.settings() {
		attrs = append(attrs, slog.String(kv[0], kv[1]))
	}
	return slog.GroupValue(attrs...)
}

// redactURL hides the user information in URLs like
// redis://user:pass@host or https://token@host (several, comma-separated).
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + redactedText + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}
