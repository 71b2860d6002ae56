<#
.SYNOPSIS
  Installs the Jishi agent from this offline bundle as the Windows service "JishiAgent".

.DESCRIPTION
  Run from the unpacked bundle in an elevated PowerShell (Windows 10/11, Server 2016+):
      powershell -ExecutionPolicy Bypass -File .\install.ps1 [-Config D:\prepared\agent.toml]
  Nothing is downloaded. The service runs `python.exe -m agent.winservice` (pywin32's service
  framework) as the virtual account NT SERVICE\JishiAgent. Config, keys, spool and logs live in
  %ProgramData%\Jishi. ACLs are set with icacls, by SID (built-in group names are translated on
  Chinese Windows): the agent's key and other secrets are readable by the service account ONLY
  (Administrators own them and can re-grant access, but cannot read them as installed); the spool
  and log folders are writable by the service; the config is readable by it.
  Re-running the script upgrades the program files and keeps config, keys and spool.
#>
#Requires -RunAsAdministrator
param(
    [string]$InstallDir = (Join-Path $env:ProgramFiles "Jishi\agent"),
    [string]$DataRoot = (Join-Path $env:ProgramData "Jishi"),
    # a prepared agent.toml; without it the example is copied and must be edited before the start
    [string]$Config = "",
    # folders the service must read (the data_files detector's path), e.g. 'D:\MassHunter\Data'
    [string[]]$ReadFolders = @(),
    [switch]$NoStart
)
$ErrorActionPreference = "Stop"
$ServiceName = "JishiAgent"
$Account = "NT SERVICE\$ServiceName"
$Admins = "*S-1-5-32-544"   # BUILTIN\Administrators
$System = "*S-1-5-18"       # NT AUTHORITY\SYSTEM
$Here = Split-Path -Parent $MyInvocation.MyCommand.Path

function Invoke-Checked([string]$What, [scriptblock]$Block) {
    # native tools write progress to stderr: judge them by their exit code, not by that
    $saved = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try { & $Block } finally { $ErrorActionPreference = $saved }
    if ($LASTEXITCODE -ne 0) { throw "$What failed (exit code $LASTEXITCODE)" }
}

# 1. program files (an upgrade stops the running service first; its spool is kept)
$existing = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
if ($existing -and $existing.Status -ne "Stopped") { Stop-Service -Name $ServiceName -Force }
New-Item -ItemType Directory -Force -Path $InstallDir | Out-Null
if (Test-Path (Join-Path $InstallDir "python")) { Remove-Item -Recurse -Force (Join-Path $InstallDir "python") }
Copy-Item -Recurse -Force (Join-Path $Here "python") $InstallDir
Copy-Item -Force (Join-Path $Here "jishi-agent.cmd"), (Join-Path $Here "MANIFEST.json"), (Join-Path $Here "uninstall.ps1") $InstallDir
$Py = Join-Path $InstallDir "python\python.exe"
Invoke-Checked "the bundled Python" { & $Py -c "import agent.cli, agent.winservice, servicemanager, win32serviceutil" }

# 2. data folders and config
foreach ($d in @($DataRoot, (Join-Path $DataRoot "data"), (Join-Path $DataRoot "logs"))) {
    New-Item -ItemType Directory -Force -Path $d | Out-Null
}
$Cfg = Join-Path $DataRoot "agent.toml"
if (-not (Test-Path $Cfg)) {
    if ($Config) { Copy-Item $Config $Cfg }
    else {
        Copy-Item (Join-Path $Here "config\mass-spectrometer-windows.toml.example") $Cfg
        Write-Warning "Copied an EXAMPLE config to $Cfg: edit it (ids, broker, detectors), then run install.ps1 again."
        $NoStart = $true
    }
}
$env:JISHI_AGENT_CONFIG = $Cfg
& $Py -m agent.cli check --no-broker --config $Cfg | Out-Host   # exit 1: a device or the key is not there yet
if ($LASTEXITCODE -eq 2) { throw "the config $Cfg has mistakes (see above): fix it and run install.ps1 again" }

# 3. the service, as a virtual account; restarted by the SCM if it fails. Memory (issue 17, bench/RESULTS.md
#    "agentmem"): -OO (no docstrings or asserts) with a bytecode cache the service may write, filled now.
#    The embeddable Python ignores PYTHON* variables (its ._pth file), hence interpreter options.
$Cache = Join-Path $DataRoot "pycache"
New-Item -ItemType Directory -Force -Path $Cache | Out-Null
$Bin = "`"$Py`" -OO -X `"pycache_prefix=$Cache`" -m agent.winservice"
& $Py -OO -X "pycache_prefix=$Cache" -m agent.precompile   # fills the cache; never fails the install
if (-not $existing) {
    New-Service -Name $ServiceName -BinaryPathName $Bin `
        -DisplayName "Jishi instrument agent" -StartupType Automatic `
        -Description "Records verified machine-hours of this instrument and sends them, signed, to the Jishi platform." | Out-Null
}
# an upgrade from an older bundle gets the options too
Set-ItemProperty -Path "HKLM:\SYSTEM\CurrentControlSet\Services\$ServiceName" -Name ImagePath -Value $Bin
# the service finds its config through JISHI_AGENT_CONFIG in its own environment (any -DataRoot)
New-ItemProperty -Path "HKLM:\SYSTEM\CurrentControlSet\Services\$ServiceName" -Name Environment `
    -PropertyType MultiString -Value @("JISHI_AGENT_CONFIG=$Cfg") -Force | Out-Null
Invoke-Checked "sc config" { sc.exe config $ServiceName obj= "$Account" | Out-Null }
# the Event Log source for the service's start/stop/failure messages (pywin32's message DLL)
Invoke-Checked "event log source" { & $Py -c "import servicemanager, win32evtlogutil; win32evtlogutil.AddSourceToRegistry('$ServiceName', servicemanager.__file__)" }
Invoke-Checked "sc failure" { sc.exe failure $ServiceName reset= 86400 actions= restart/5000/restart/5000/restart/60000 | Out-Null }

# 4. keys (created here, once; never overwritten) and the enrolments to register on the platform.
#    The enrolment reads the private key, so it is made now, before the ACLs lock the key away.
$paths = (& $Py -c "from agent.winservice import print_acl_paths; print_acl_paths()") | ConvertFrom-Json
if ($LASTEXITCODE -ne 0) { throw "reading the paths of $Cfg failed" }
foreach ($entry in $paths.keys.PSObject.Properties) {
    $id, $key = $entry.Name, $entry.Value
    if (Test-Path $key) { continue }
    Invoke-Checked "keygen $id" { & $Py -m agent.cli keygen --config $Cfg --instrument $id | Out-Host }
    $doc = Join-Path $DataRoot "enrolment-$id.json"
    Invoke-Checked "enroll $id" { & $Py -m agent.cli enroll --config $Cfg --instrument $id | Set-Content -Encoding UTF8 $doc }
    Write-Host "Enrolment of $id (public key and ids to register on the platform): $doc"
}

# 5. ACLs (icacls, not chmod)
Invoke-Checked "icacls $DataRoot" { icacls $DataRoot /inheritance:r /grant:r "${Admins}:(OI)(CI)F" "${System}:(OI)(CI)F" "${Account}:(RX)" | Out-Null }
Invoke-Checked "icacls $Cfg" { icacls $Cfg /grant:r "${Account}:(R)" | Out-Null }
foreach ($file in $paths.readable) {
    if (Test-Path $file) { Invoke-Checked "icacls $file" { icacls $file /grant:r "${Account}:(R)" | Out-Null } }
}
foreach ($dir in $paths.writable) {
    if ($dir.TrimEnd("\") -eq $DataRoot.TrimEnd("\")) {
        throw "a spool or log_file directly in $DataRoot would make the config writable by the service: use a subfolder (data\, logs\)"
    }
    New-Item -ItemType Directory -Force -Path $dir | Out-Null
    Invoke-Checked "icacls $dir" { icacls $dir /grant:r "${Account}:(OI)(CI)M" | Out-Null }
}
foreach ($secret in $paths.secrets) {
    if (-not (Test-Path $secret)) { Write-Warning "secret file $secret does not exist yet"; continue }
    # only the service account may read it; Administrators own it (and can re-grant, deliberately)
    Invoke-Checked "icacls $secret" { icacls $secret /inheritance:r /grant:r "${Account}:(R)" | Out-Null }
    Invoke-Checked "icacls $secret owner" { icacls $secret /setowner $Admins | Out-Null }
}
Invoke-Checked "icacls $Cache" { icacls $Cache /grant:r "${Account}:(OI)(CI)M" | Out-Null }   # the bytecode cache
foreach ($dir in $ReadFolders) {
    Invoke-Checked "icacls $dir" { icacls $dir /grant "${Account}:(OI)(CI)RX" | Out-Null }
}

# 6. start
if (-not $NoStart) {
    Start-Service -Name $ServiceName
    Write-Host "Started $ServiceName. Status: $InstallDir\jishi-agent.cmd status --config $Cfg"
} else {
    Write-Host "Installed $ServiceName (not started)."
}
