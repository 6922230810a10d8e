package bootenv_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/gitfleet/gitfleet/device/bootenv"
)

// The life of an update as the bootloader environment sees it.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "bootenv")
	defer os.RemoveAll(dir)
	env := bootenv.NewFile(filepath.Join(dir, "env")) // or NewUBoot, NewGRUB

	// Factory state: partition 2 (A) boots.
	if err := bootenv.Rollback(ctx, env, 2); err != nil {
		log.Fatal(err)
	}
	// The image is in partition 3 (B) and checks out: flip the switch.
	if err := bootenv.Switch(ctx, env, 3); err != nil {
		log.Fatal(err)
	}
	st, _ := bootenv.ReadState(ctx, env)
	fmt.Printf("after switch: %+v\n", st)

	// B booted and is healthy: commit.
	if err := bootenv.Commit(ctx, env); err != nil {
		log.Fatal(err)
	}
	st, _ = bootenv.ReadState(ctx, env)
	fmt.Printf("after commit: %+v\n", st)
	// Output:
	// after switch: {Part:3 UpgradeAvailable:true BootCount:0}
	// after commit: {Part:3 UpgradeAvailable:false BootCount:0}
}

// A U-Boot environment located by an fw_env.config, as fw_printenv finds it.
func ExampleNewUBoot() {
	env, err := bootenv.NewUBoot(bootenv.UBootOptions{Config: "/etc/fw_env.config"})
	if err != nil {
		fmt.Println("no U-Boot environment here")
		return
	}
	vars, err := env.Get(context.Background(), bootenv.VarBootPart)
	fmt.Println(vars, err)
}
