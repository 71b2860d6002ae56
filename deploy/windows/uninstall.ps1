<#
.SYNOPSIS
  Removes the Jishi agent service and its program files.

.DESCRIPTION
  Run in an elevated PowerShell:  powershell -ExecutionPolicy Bypass -File .\uninstall.ps1 [-RemoveData]
  Without -RemoveData the config, the agent's key and its spool in %ProgramData%\Jishi are KEPT:
  the spool may hold records the server has not acknowledged yet, and the key is the agent's
  identity on the platform. -RemoveData deletes them too (taking ownership first, since the key
  is readable by the service account only).
#>
#Requires -RunAsAdministrator
param(
    [string]$InstallDir = (Join-Path $env:ProgramFiles "Jishi\agent"),
    [string]$DataRoot = (Join-Path $env:ProgramData "Jishi"),
    [switch]$RemoveData
)
$ErrorActionPreference = "Stop"
$ServiceName = "JishiAgent"

$svc = Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
if ($svc) {
    # a clean stop: the agent records `stop`, flushes its spool and sends its clean death message
    if ($svc.Status -ne "Stopped") { Stop-Service -Name $ServiceName -Force }
    sc.exe delete $ServiceName | Out-Null
    if ($LASTEXITCODE -ne 0) { throw "sc delete $ServiceName failed (exit code $LASTEXITCODE)" }
}
if (Test-Path $InstallDir) { Remove-Item -Recurse -Force $InstallDir }

if ($RemoveData) {
    if (Test-Path $DataRoot) {
        takeown /F $DataRoot /R /A /D Y | Out-Null
        icacls $DataRoot /reset /T /C | Out-Null
        Remove-Item -Recurse -Force $DataRoot
    }
    Write-Host "Removed $ServiceName, $InstallDir and $DataRoot."
} else {
    Write-Host "Removed $ServiceName and $InstallDir. Kept $DataRoot (config, key, spool): -RemoveData deletes it."
}
