/**
 * The dependency direction, checked by `make test`:
 * the pure core (config, qemu, request, attestation, util) never reaches the edges (processes, files,
 * sockets, the API) nor effectful Node modules, so it is tested with plain values.
 */
const CORE = '^src/(config|qemu|request|attestation|util|isolation)/';
const GENERATED = '^src/api/grpc/generated/';

module.exports = {
  forbidden: [
    {
      name: 'core-imports-no-edges',
      comment: 'The core is pure: it must not import the service, the API, VM processes or the CLI.',
      severity: 'error',
      from: { path: CORE },
      to: { path: '^src/(api|vm|manager|cli|telemetry)/', pathNot: GENERATED },
    },
    {
      name: 'core-takes-only-wire-types',
      comment: 'The core may name the messages generated from the proto (the contract), as types only: no gRPC code.',
      severity: 'error',
      from: { path: CORE },
      to: { path: GENERATED, dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'core-has-no-effects',
      comment: 'No files, processes, sockets or gRPC in the core: push them to the edges.',
      severity: 'error',
      from: { path: CORE },
      to: {
        dependencyTypes: ['core', 'npm'],
        path: '^(node:)?(fs|fs/promises|child_process|net|dgram|http|https|tls|os|process|cluster|worker_threads)$|^(execa|@grpc/|pino)',
      },
    },
    {
      name: 'api-does-not-touch-processes',
      comment: 'The API layer talks to the manager, never to VM processes or files directly.',
      severity: 'error',
      from: { path: '^src/api/' },
      to: { path: '^src/vm/' },
    },
    {
      name: 'manager-reaches-processes-through-the-driver',
      comment:
        'The manager (launcher, registry, recovery, SupervisedVm) reaches QEMU and /proc only through the VmDriver port (src/manager/vm-driver.port.ts); src/vm/qemu-driver.ts implements it and the CLI wires it in, so tests run the manager with a fake driver.',
      severity: 'error',
      from: { path: '^src/manager/' },
      to: {
        path: ['^src/vm/(qemu-process|qemu-driver|qmp|proc|spawner|qemu-version|socket-owner|output-tail|console-budget)\\.ts$', '^(node:)?(child_process|net|dgram|cluster|worker_threads)$', '^execa'],
      },
    },
    {
      name: 'api-reaches-the-manager-through-its-port',
      comment:
        'The API depends on the ManagerService port and the errors it maps, never on VmManager or the ' +
        "manager's internals (launcher, registry, recovery), which change without the API noticing.",
      severity: 'error',
      from: { path: '^src/api/' },
      to: { path: '^src/manager/', pathNot: '^src/manager/(manager-service\\.port|errors)\\.ts$' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    // The generated messages are leaves: seen (so the rules above apply to them), not cruised.
    doNotFollow: { path: ['node_modules', GENERATED] },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
  },
};
