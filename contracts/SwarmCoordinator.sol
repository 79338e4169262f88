// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/*
 * RL Swarm's on-chain coordinator.
 *
 * External interface: the public SwarmCoordinator 0.4.2 ABI (same functions, argument and
 * return types, events and errors), so one chain client talks to either. Written from scratch
 * for this project; no library code.
 *
 * Shape:
 * - `SwarmCoordinator` is the logic contract (UUPS-upgradeable: `upgradeToAndCall`,
 *   `proxiableUUID`). It is deployed once and used through `SwarmCoordinatorProxy`, an
 *   ERC-1967 proxy whose constructor calls `initialize(owner)`.
 * - Identity: a wallet (EOA) registers one or more libp2p peer IDs; a peer ID belongs to one
 *   wallet forever. Registration needs proof of the peer's key (`registerPeerWithProof`): the
 *   peer ID must be the base58 sha2-256 multihash of the given protobuf PublicKey (RSA, as
 *   hivemind peers use), and the key must sign (RSA PKCS#1 v1.5, SHA-256) the message
 *   abi.encode(REGISTRATION_TAG, chainid, this contract, msg.sender, peerId), checked with the
 *   modexp precompile. So nobody can register a peer ID read off the DHT, and a proof sent by
 *   one wallet cannot be replayed by another or on another chain/contract. The 0.4.2
 *   `registerPeer(peerId)` keeps its signature but always reverts `PeerProofRequired`.
 * - Game clock: round/stage, advanced by a STAGE_MANAGER_ROLE account; 3 stages per round.
 * - Rewards: one int256 per (round, stage, peer ID), |reward| <= MAX_ABS_REWARD (1e6 = 1000
 *   points at the Python client's scale of points x 1000), only for the current round or the
 *   one before. Totals are kept per peer ID; the 0.4.2 per-wallet views report the sum and
 *   "any of its peers" for a wallet.
 * - Votes: once per (round, voter peer ID), same round window as rewards, from a voter that
 *   submitted a reward for that round, naming 1..MAX_WINNERS_PER_VOTE distinct registered peers.
 * - Leaderboards (voters by number of votes cast, peers by wins) are kept fully sorted
 *   incrementally: a count only ever grows by one, so each update is O(1) (one swap with the
 *   first member of its equal-count group). Views page the sorted list; no transaction ever
 *   loops over all peers.
 *
 * Refusals use custom errors. Besides the 0.4.2 set: `InvalidPeerId` (empty, over-long or not
 * base58), `PeerProofRequired` (old registerPeer), `InvalidPeerProof` (key does not hash to the
 * peer ID, is not RSA 2048..4096 bit, or the signature does not verify), `RoundClosed`,
 * `RewardOutOfRange`, `VoterNotParticipant`, `WinnerNotRegistered`.
 *
 * Round/stage rules for submissions (a delayed retry of the previous round still lands):
 * - roundNumber > currentRound                          -> InvalidRoundNumber
 * - roundNumber + 1 < currentRound                      -> RoundClosed (older than the previous round)
 * - stageNumber >= stageCount()                         -> InvalidStageNumber
 * - roundNumber == currentRound && stageNumber > stage  -> StageOutOfBounds (stage not reached yet)
 */

/// @notice ERC-1967 proxy: storage lives here, code in the implementation it delegates to.
contract SwarmCoordinatorProxy {
    // bytes32(uint256(keccak256("eip1967.proxy.implementation")) - 1)
    bytes32 internal constant IMPLEMENTATION_SLOT = 0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc;

    event Upgraded(address indexed implementation);

    error ERC1967InvalidImplementation(address implementation);
    error ERC1967NonPayable();
    error FailedCall();

    /// @param implementation the SwarmCoordinator logic contract
    /// @param data calldata run once in the proxy's context, normally `initialize(owner)`
    constructor(address implementation, bytes memory data) payable {
        if (implementation.code.length == 0) revert ERC1967InvalidImplementation(implementation);
        assembly {
            sstore(IMPLEMENTATION_SLOT, implementation)
        }
        emit Upgraded(implementation);
        if (data.length > 0) {
            (bool ok, bytes memory ret) = implementation.delegatecall(data);
            if (!ok) {
                if (ret.length == 0) revert FailedCall();
                assembly {
                    revert(add(ret, 32), mload(ret))
                }
            }
        } else if (msg.value > 0) {
            revert ERC1967NonPayable();
        }
    }

    fallback() external payable {
        assembly {
            let impl := sload(IMPLEMENTATION_SLOT)
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), impl, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            switch ok
            case 0 { revert(0, returndatasize()) }
            default { return(0, returndatasize()) }
        }
    }

    receive() external payable {
        revert ERC1967NonPayable();
    }
}

/// @notice Peer identities, the round/stage clock, rewards, votes and leaderboards of a swarm.
contract SwarmCoordinator {
    // ------------------------------------------------------------------ constants

    string public constant UPGRADE_INTERFACE_VERSION = "5.0.0";
    bytes32 public constant OWNER_ROLE = keccak256("OWNER_ROLE");
    bytes32 public constant STAGE_MANAGER_ROLE = keccak256("STAGE_MANAGER_ROLE");
    bytes32 public constant BOOTNODE_MANAGER_ROLE = keccak256("BOOTNODE_MANAGER_ROLE");

    bytes32 internal constant IMPLEMENTATION_SLOT = 0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc;
    uint256 internal constant STAGE_COUNT = 3;
    // Bounds the loops of submitWinners (duplicate check) to a constant.
    uint256 internal constant MAX_WINNERS_PER_VOTE = 32;
    // libp2p peer IDs are ~52 characters; the cap bounds storage and copies per peer.
    uint256 internal constant MAX_PEER_ID_BYTES = 128;
    // Rewards are points x 1000 off-chain; 1e6 is 1000 points, far above any real stage mean.
    int256 internal constant MAX_ABS_REWARD = 1_000_000;
    // Domain tag of the registration message (versioned so a future format cannot be confused).
    string public constant REGISTRATION_TAG = "rl-swarm registerPeer v1";
    // RSA modulus sizes accepted (bytes): 2048..4096 bit keys, whole 32-byte words (gas bound).
    uint256 internal constant MIN_RSA_BYTES = 256;
    uint256 internal constant MAX_RSA_BYTES = 512;
    // DER AlgorithmIdentifier { rsaEncryption, NULL }.
    bytes32 internal constant RSA_ALG_ID_HASH = keccak256(hex"300d06092a864886f70d0101010500");

    // The logic contract's own address: tells proxy calls from direct calls (UUPS).
    address private immutable _self = address(this);

    // ------------------------------------------------------------------ events

    event Initialized(uint64 version);
    event Upgraded(address indexed implementation);
    event RoleGranted(bytes32 indexed role, address indexed account, address indexed sender);
    event RoleRevoked(bytes32 indexed role, address indexed account, address indexed sender);
    event PeerRegistered(address indexed eoa, string peerId);
    event StageAdvanced(uint256 indexed roundNumber, uint256 newStage);
    event RoundAdvanced(uint256 indexed newRoundNumber);
    event BootnodesAdded(address indexed manager, uint256 count);
    event BootnodeRemoved(address indexed manager, uint256 index);
    event AllBootnodesCleared(address indexed manager);
    event RewardSubmitted(
        address indexed account, uint256 indexed roundNumber, uint256 indexed stageNumber, int256 reward, string peerId
    );
    event CumulativeRewardsUpdated(address indexed account, string peerId, int256 totalRewards);
    event WinnerSubmitted(address indexed account, string peerId, uint256 indexed roundNumber, string[] winners);

    // ------------------------------------------------------------------ errors

    error OnlyOwner();
    error OnlyStageManager();
    error OnlyBootnodeManager();
    error PeerIdAlreadyRegistered();
    error InvalidPeerId();
    error PeerProofRequired();
    error InvalidPeerProof();
    error RoundClosed();
    error RewardOutOfRange();
    error VoterNotParticipant();
    error WinnerNotRegistered();
    error InvalidRoundNumber();
    error InvalidStageNumber();
    error StageOutOfBounds();
    error RewardAlreadySubmitted();
    error WinnerAlreadyVoted();
    error InvalidVote();
    error InvalidVoterPeerId();
    error InvalidBootnodeIndex();
    error InvalidInitialization();
    error NotInitializing();
    error UUPSUnauthorizedCallContext();
    error UUPSUnsupportedProxiableUUID(bytes32 slot);
    error ERC1967InvalidImplementation(address implementation);
    error ERC1967NonPayable();
    error AddressEmptyCode(address target);
    error FailedCall();

    // ------------------------------------------------------------------ storage
    // Append-only across upgrades: new variables go at the end.

    /// A list kept sorted by count (descending). Counts only grow by one at a time, and
    /// members with equal counts sit in one contiguous group, so moving a member up one
    /// count is a swap with the first member of its group.
    struct Ranking {
        bytes32[] order;
        mapping(bytes32 => uint256) positionPlusOne; // 0 = not ranked yet
        mapping(bytes32 => uint256) count;
        mapping(uint256 => uint256) groupStart; // count -> first position holding that count
        mapping(uint256 => uint256) groupSize; // count -> members holding that count
    }

    uint64 private _initializedVersion;
    bool private _initializing;
    uint256 private _currentRound;
    uint256 private _currentStage;
    mapping(bytes32 => mapping(address => bool)) private _roles;

    // Unused since registration needs a proof (peers now in _eoaPeerKeys); kept so the layout stays append-only.
    mapping(address => string[]) private _eoaPeerIds;
    mapping(bytes32 => address) private _peerEoa; // keccak(peerId) -> owner wallet
    mapping(bytes32 => string) private _peerName; // keccak(peerId) -> peerId, for leaderboards

    // clearBootnodes starts a fresh list instead of deleting each entry (O(1)).
    uint256 private _bootnodeGeneration;
    mapping(uint256 => string[]) private _bootnodes;

    mapping(uint256 => mapping(uint256 => mapping(address => bool))) private _rewardSubmitted;
    mapping(uint256 => mapping(uint256 => mapping(address => int256))) private _roundStageReward;
    mapping(bytes32 => int256) private _totalRewards;

    mapping(uint256 => mapping(bytes32 => string[])) private _votes; // round -> voter -> winners (never empty once cast)
    mapping(uint256 => mapping(bytes32 => uint256)) private _roundPeerVotes; // round -> peer -> votes received

    Ranking private _voters; // voter peer -> rounds voted in
    Ranking private _winners; // peer -> votes received over all rounds

    struct PeerReward {
        bool submitted;
        int128 reward; // |reward| <= MAX_ABS_REWARD, so it packs with the flag in one slot
    }

    mapping(uint256 => mapping(uint256 => mapping(bytes32 => PeerReward))) private _peerReward; // round -> stage -> peer
    // wallet -> keys of its peers; names live once in _peerName (one slot per peer instead of a string copy)
    mapping(address => bytes32[]) private _eoaPeerKeys;

    // ------------------------------------------------------------------ set-up and roles

    /// The logic contract itself can never be initialized; only proxies pointing at it.
    constructor() {
        _initializedVersion = type(uint64).max;
        emit Initialized(type(uint64).max);
    }

    /// @notice One-time set-up through the proxy: `owner_` gets every role.
    function initialize(address owner_) external {
        if (_initializedVersion != 0 || _initializing) revert InvalidInitialization();
        _initializedVersion = 1;
        _initializing = true;
        _initRoles(owner_);
        _initializing = false;
        emit Initialized(1);
    }

    function _initRoles(address owner_) private {
        if (!_initializing) revert NotInitializing();
        _grantRole(OWNER_ROLE, owner_);
        _grantRole(STAGE_MANAGER_ROLE, owner_);
        _grantRole(BOOTNODE_MANAGER_ROLE, owner_);
    }

    modifier onlyOwner() {
        if (!_roles[OWNER_ROLE][msg.sender]) revert OnlyOwner();
        _;
    }

    modifier onlyStageManager() {
        if (!_roles[STAGE_MANAGER_ROLE][msg.sender]) revert OnlyStageManager();
        _;
    }

    modifier onlyBootnodeManager() {
        if (!_roles[BOOTNODE_MANAGER_ROLE][msg.sender]) revert OnlyBootnodeManager();
        _;
    }

    function hasRole(bytes32 role, address account) external view returns (bool) {
        return _roles[role][account];
    }

    function grantRole(bytes32 role, address account) external onlyOwner {
        _grantRole(role, account);
    }

    function revokeRole(bytes32 role, address account) external onlyOwner {
        if (_roles[role][account]) {
            _roles[role][account] = false;
            emit RoleRevoked(role, account, msg.sender);
        }
    }

    function _grantRole(bytes32 role, address account) private {
        if (!_roles[role][account]) {
            _roles[role][account] = true;
            emit RoleGranted(role, account, msg.sender);
        }
    }

    // ------------------------------------------------------------------ upgrades (UUPS)

    /// @notice ERC-1822 slot; only answers on the logic contract itself, never through a proxy.
    function proxiableUUID() external view returns (bytes32) {
        if (address(this) != _self) revert UUPSUnauthorizedCallContext();
        return IMPLEMENTATION_SLOT;
    }

    /// @notice Point the proxy at new logic (owner only) and optionally run `data` on it.
    function upgradeToAndCall(address newImplementation, bytes calldata data) external payable {
        // Context first: on the logic contract itself (no roles there) the answer is "wrong context".
        if (address(this) == _self || _implementation() != _self) revert UUPSUnauthorizedCallContext();
        if (!_roles[OWNER_ROLE][msg.sender]) revert OnlyOwner();
        (bool ok, bytes memory ret) = newImplementation.staticcall(abi.encodeCall(this.proxiableUUID, ()));
        if (!ok || ret.length != 32) revert ERC1967InvalidImplementation(newImplementation);
        bytes32 slot = abi.decode(ret, (bytes32));
        if (slot != IMPLEMENTATION_SLOT) revert UUPSUnsupportedProxiableUUID(slot);
        assembly {
            sstore(IMPLEMENTATION_SLOT, newImplementation)
        }
        emit Upgraded(newImplementation);
        if (data.length > 0) {
            _delegate(newImplementation, data);
        } else if (msg.value > 0) {
            revert ERC1967NonPayable();
        }
    }

    function _implementation() private view returns (address impl) {
        assembly {
            impl := sload(IMPLEMENTATION_SLOT)
        }
    }

    function _delegate(address target, bytes calldata data) private {
        (bool ok, bytes memory ret) = target.delegatecall(data);
        if (!ok) {
            if (ret.length == 0) revert FailedCall();
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        if (ret.length == 0 && target.code.length == 0) revert AddressEmptyCode(target);
    }

    // ------------------------------------------------------------------ peers

    /// @notice 0.4.2 signature kept for compatibility; registration needs a key proof now:
    ///         always reverts PeerProofRequired (so solc makes it pure; 0.4.2 had nonpayable).
    function registerPeer(string calldata) external pure {
        revert PeerProofRequired();
    }

    /// @notice Bind `peerId` to the caller's wallet, once, proving the peer's key.
    /// @param publicKey protobuf libp2p PublicKey {key_type: RSA, data: SubjectPublicKeyInfo DER}
    /// @param signature RSA PKCS#1 v1.5 SHA-256 over registrationMessage(msg.sender, peerId)
    function registerPeerWithProof(string calldata peerId, bytes calldata publicKey, bytes calldata signature)
        external
    {
        uint256 len = bytes(peerId).length;
        if (len == 0 || len > MAX_PEER_ID_BYTES) revert InvalidPeerId();
        bytes32 key = keccak256(bytes(peerId));
        if (_peerEoa[key] != address(0)) revert PeerIdAlreadyRegistered();
        if (_peerIdDigest(peerId) != sha256(publicKey)) revert InvalidPeerProof();
        (bytes calldata modulus, bytes calldata exponent) = _rsaPublicKey(publicKey);
        if (!_rsaVerify(sha256(registrationMessage(msg.sender, peerId)), signature, exponent, modulus)) {
            revert InvalidPeerProof();
        }
        _peerEoa[key] = msg.sender;
        _peerName[key] = peerId;
        _eoaPeerKeys[msg.sender].push(key);
        emit PeerRegistered(msg.sender, peerId);
    }

    /// @notice The bytes a peer's key signs to let `wallet` register `peerId` here (this chain, this proxy).
    function registrationMessage(address wallet, string calldata peerId) public view returns (bytes memory) {
        return abi.encode(REGISTRATION_TAG, block.chainid, address(this), wallet, peerId);
    }

    function getPeerId(address[] calldata eoas) external view returns (string[][] memory peerIds) {
        peerIds = new string[][](eoas.length);
        for (uint256 i = 0; i < eoas.length; i++) {
            bytes32[] storage keys = _eoaPeerKeys[eoas[i]];
            string[] memory ids = new string[](keys.length);
            for (uint256 j = 0; j < keys.length; j++) {
                ids[j] = _peerName[keys[j]];
            }
            peerIds[i] = ids;
        }
    }

    function getEoa(string[] calldata peerIds) external view returns (address[] memory eoas) {
        eoas = new address[](peerIds.length);
        for (uint256 i = 0; i < peerIds.length; i++) {
            eoas[i] = _peerEoa[keccak256(bytes(peerIds[i]))];
        }
    }

    // ------------------------------------------------------------------ round and stage

    function currentRound() external view returns (uint256) {
        return _currentRound;
    }

    function currentStage() external view returns (uint256) {
        return _currentStage;
    }

    function stageCount() external pure returns (uint256) {
        return STAGE_COUNT;
    }

    /// @notice Next stage; after the last stage, stage 0 of the next round.
    function updateStageAndRound() external onlyStageManager returns (uint256, uint256) {
        uint256 stage = _currentStage + 1;
        if (stage >= STAGE_COUNT) {
            _currentRound += 1;
            _currentStage = 0;
            emit RoundAdvanced(_currentRound);
        } else {
            _currentStage = stage;
        }
        emit StageAdvanced(_currentRound, _currentStage);
        return (_currentRound, _currentStage);
    }

    // ------------------------------------------------------------------ bootnodes

    function addBootnodes(string[] calldata newBootnodes) external onlyBootnodeManager {
        string[] storage list = _bootnodes[_bootnodeGeneration];
        for (uint256 i = 0; i < newBootnodes.length; i++) {
            list.push(newBootnodes[i]);
        }
        emit BootnodesAdded(msg.sender, newBootnodes.length);
    }

    /// @notice Remove one bootnode; the last entry takes its place (order is not kept).
    function removeBootnode(uint256 index) external onlyBootnodeManager {
        string[] storage list = _bootnodes[_bootnodeGeneration];
        uint256 last = list.length;
        if (index >= last) revert InvalidBootnodeIndex();
        last -= 1;
        if (index != last) {
            list[index] = list[last];
        }
        list.pop();
        emit BootnodeRemoved(msg.sender, index);
    }

    function clearBootnodes() external onlyBootnodeManager {
        _bootnodeGeneration += 1;
        emit AllBootnodesCleared(msg.sender);
    }

    function getBootnodes() external view returns (string[] memory) {
        return _bootnodes[_bootnodeGeneration];
    }

    function getBootnodesCount() external view returns (uint256) {
        return _bootnodes[_bootnodeGeneration].length;
    }

    // ------------------------------------------------------------------ rewards

    /// @notice Record `peerId`'s reward for one stage of the current or previous round (once per
    ///         peer and stage); `peerId` must be registered to the caller.
    function submitReward(uint256 roundNumber, uint256 stageNumber, int256 reward, string calldata peerId) external {
        _checkRoundStage(roundNumber, stageNumber);
        if (reward > MAX_ABS_REWARD || reward < -MAX_ABS_REWARD) revert RewardOutOfRange();
        bytes32 key = _ownedPeer(peerId);
        PeerReward storage slot = _peerReward[roundNumber][stageNumber][key];
        if (slot.submitted) revert RewardAlreadySubmitted();
        slot.submitted = true;
        slot.reward = int128(reward);
        // 0.4.2 per-wallet views: "any of its peers submitted" and the sum over its peers.
        _rewardSubmitted[roundNumber][stageNumber][msg.sender] = true;
        _roundStageReward[roundNumber][stageNumber][msg.sender] += reward;
        int256 total = _totalRewards[key] + reward;
        _totalRewards[key] = total;
        emit RewardSubmitted(msg.sender, roundNumber, stageNumber, reward, peerId);
        emit CumulativeRewardsUpdated(msg.sender, peerId, total);
    }

    function hasSubmittedRoundStageReward(uint256 roundNumber, uint256 stageNumber, address account)
        external
        view
        returns (bool)
    {
        return _rewardSubmitted[roundNumber][stageNumber][account];
    }

    function getRoundStageReward(uint256 roundNumber, uint256 stageNumber, address[] calldata accounts)
        external
        view
        returns (int256[] memory rewards)
    {
        rewards = new int256[](accounts.length);
        for (uint256 i = 0; i < accounts.length; i++) {
            rewards[i] = _roundStageReward[roundNumber][stageNumber][accounts[i]];
        }
    }

    /// @notice Has `peerId` (whoever owns it) a reward for (round, stage)?
    function hasSubmittedPeerReward(uint256 roundNumber, uint256 stageNumber, string calldata peerId)
        external
        view
        returns (bool)
    {
        return _peerReward[roundNumber][stageNumber][keccak256(bytes(peerId))].submitted;
    }

    function getPeerRoundStageReward(uint256 roundNumber, uint256 stageNumber, string[] calldata peerIds)
        external
        view
        returns (int256[] memory rewards)
    {
        rewards = new int256[](peerIds.length);
        for (uint256 i = 0; i < peerIds.length; i++) {
            rewards[i] = _peerReward[roundNumber][stageNumber][keccak256(bytes(peerIds[i]))].reward;
        }
    }

    function getTotalRewards(string[] calldata peerIds) external view returns (int256[] memory totals) {
        totals = new int256[](peerIds.length);
        for (uint256 i = 0; i < peerIds.length; i++) {
            totals[i] = _totalRewards[keccak256(bytes(peerIds[i]))];
        }
    }

    // ------------------------------------------------------------------ votes

    /// @notice The voter `peerId` (registered to the caller, with a reward in that round) names
    ///         the round's winners, once per round, for the current or previous round:
    ///         1..MAX_WINNERS_PER_VOTE distinct registered peer IDs.
    function submitWinners(uint256 roundNumber, string[] calldata winners, string calldata peerId) external {
        _checkRound(roundNumber);
        bytes32 voter = _ownedPeer(peerId);
        string[] storage stored = _votes[roundNumber][voter];
        if (stored.length != 0) revert WinnerAlreadyVoted();
        if (!_tookPart(roundNumber, voter)) revert VoterNotParticipant();
        uint256 n = winners.length;
        if (n == 0 || n > MAX_WINNERS_PER_VOTE) revert InvalidVote();
        bytes32[] memory keys = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            uint256 len = bytes(winners[i]).length;
            if (len == 0 || len > MAX_PEER_ID_BYTES) revert InvalidVote();
            bytes32 k = keccak256(bytes(winners[i]));
            // Registered peer IDs passed the base58/key check, so this also bounds the content.
            if (_peerEoa[k] == address(0)) revert WinnerNotRegistered();
            for (uint256 j = 0; j < i; j++) {
                if (keys[j] == k) revert InvalidVote();
            }
            keys[i] = k;
        }
        for (uint256 i = 0; i < n; i++) {
            stored.push(winners[i]);
            _roundPeerVotes[roundNumber][keys[i]] += 1;
            _bump(_winners, keys[i]);
        }
        _bump(_voters, voter);
        emit WinnerSubmitted(msg.sender, peerId, roundNumber, winners);
    }

    function getVoterVotes(uint256 roundNumber, string calldata peerId) external view returns (string[] memory) {
        return _votes[roundNumber][keccak256(bytes(peerId))];
    }

    function getVoterVoteCount(string calldata peerId) external view returns (uint256) {
        return _voters.count[keccak256(bytes(peerId))];
    }

    function getPeerVoteCount(uint256 roundNumber, string calldata peerId) external view returns (uint256) {
        return _roundPeerVotes[roundNumber][keccak256(bytes(peerId))];
    }

    function getTotalWins(string calldata peerId) external view returns (uint256) {
        return _winners.count[keccak256(bytes(peerId))];
    }

    function uniqueVoters() external view returns (uint256) {
        return _voters.order.length;
    }

    function uniqueVotedPeers() external view returns (uint256) {
        return _winners.order.length;
    }

    /// @notice Voters by rounds voted in, most first; positions [start, end), end clamped.
    function voterLeaderboard(uint256 start, uint256 end)
        external
        view
        returns (string[] memory peerIds, uint256[] memory voteCounts)
    {
        return _page(_voters, start, end);
    }

    /// @notice Peers by votes received over all rounds, most first; positions [start, end), end clamped.
    function winnerLeaderboard(uint256 start, uint256 end)
        external
        view
        returns (string[] memory peerIds, uint256[] memory wins)
    {
        return _page(_winners, start, end);
    }

    // ------------------------------------------------------------------ internals

    function _checkRound(uint256 roundNumber) private view {
        uint256 current = _currentRound;
        if (roundNumber > current) revert InvalidRoundNumber();
        if (roundNumber + 1 < current) revert RoundClosed();
    }

    function _checkRoundStage(uint256 roundNumber, uint256 stageNumber) private view {
        _checkRound(roundNumber);
        if (stageNumber >= STAGE_COUNT) revert InvalidStageNumber();
        if (roundNumber == _currentRound && stageNumber > _currentStage) revert StageOutOfBounds();
    }

    function _tookPart(uint256 roundNumber, bytes32 peer) private view returns (bool) {
        for (uint256 s = 0; s < STAGE_COUNT; s++) {
            if (_peerReward[roundNumber][s][peer].submitted) return true;
        }
        return false;
    }

    // ------------------------------------------------------------------ key proofs

    /// The sha-256 digest inside a peer ID: base58-decode it (3 x 128-bit limbs, no bignum
    /// library) and require the multihash prefix 0x1220. Canonical base58 has no leading '1'
    /// here (the first byte is 0x12), so decoding is one-to-one and comparing digests is exact.
    function _peerIdDigest(string calldata peerId) private pure returns (bytes32) {
        bytes calldata s = bytes(peerId);
        uint256 mask = type(uint128).max;
        uint256 l0;
        uint256 l1;
        uint256 l2;
        for (uint256 i = 0; i < s.length; i++) {
            // Limbs stay below 2^128 (l2 below 2^16), so x58 plus carry cannot overflow.
            unchecked {
                uint256 t = l0 * 58 + _base58Digit(uint8(s[i]));
                l0 = t & mask;
                t = l1 * 58 + (t >> 128);
                l1 = t & mask;
                l2 = l2 * 58 + (t >> 128);
            }
            if (l2 > 0xffff) revert InvalidPeerProof(); // longer than a sha2-256 multihash
        }
        if (l2 != 0x1220 || uint8(s[0]) == 0x31) revert InvalidPeerProof();
        return bytes32((l1 << 128) | l0);
    }

    function _base58Digit(uint8 c) private pure returns (uint256) {
        // 123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz (no 0, O, I, l)
        if (c >= 0x31 && c <= 0x39) return c - 0x31;
        if (c >= 0x41 && c <= 0x48) return c - 0x41 + 9;
        if (c >= 0x4a && c <= 0x4e) return c - 0x4a + 17;
        if (c >= 0x50 && c <= 0x5a) return c - 0x50 + 22;
        if (c >= 0x61 && c <= 0x6b) return c - 0x61 + 33;
        if (c >= 0x6d && c <= 0x7a) return c - 0x6d + 44;
        revert InvalidPeerId();
    }

    /// (modulus, exponent) of a protobuf PublicKey {1: RSA (0), 2: SubjectPublicKeyInfo DER}.
    function _rsaPublicKey(bytes calldata pk) private pure returns (bytes calldata modulus, bytes calldata exponent) {
        if (pk.length < 8 || pk[0] != 0x08 || pk[1] != 0x00 || pk[2] != 0x12) revert InvalidPeerProof();
        uint256 p = 3;
        uint256 dataLen;
        // varint length, 1..2 bytes (a 4096-bit SPKI is ~550 bytes)
        if (uint8(pk[p]) < 0x80) {
            dataLen = uint8(pk[p]);
            p += 1;
        } else {
            dataLen = (uint8(pk[p]) & 0x7f) | (uint256(uint8(pk[p + 1])) << 7);
            if (uint8(pk[p + 1]) >= 0x80) revert InvalidPeerProof();
            p += 2;
        }
        if (p + dataLen != pk.length) revert InvalidPeerProof();
        uint256 len;
        (p, len) = _der(pk, p, 0x30); // SubjectPublicKeyInfo
        if (p + len != pk.length) revert InvalidPeerProof();
        if (keccak256(pk[p:p + 15]) != RSA_ALG_ID_HASH) revert InvalidPeerProof();
        p += 15;
        (p, len) = _der(pk, p, 0x03); // BIT STRING, no unused bits
        if (pk[p] != 0x00) revert InvalidPeerProof();
        (p, len) = _der(pk, p + 1, 0x30); // RSAPublicKey
        (p, len) = _der(pk, p, 0x02);
        modulus = pk[p:p + len];
        p += len;
        if (modulus.length > 0 && modulus[0] == 0x00) modulus = modulus[1:];
        (p, len) = _der(pk, p, 0x02);
        exponent = pk[p:p + len];
        p += len;
        if (p != pk.length || exponent.length == 0 || exponent.length > 32) revert InvalidPeerProof();
        uint256 k = modulus.length;
        if (k < MIN_RSA_BYTES || k > MAX_RSA_BYTES || k % 32 != 0 || modulus[0] == 0x00) revert InvalidPeerProof();
    }

    /// DER header at `p` with tag `tag`: (content start, content length), short or 1-2 byte long form.
    function _der(bytes calldata b, uint256 p, uint8 tag) private pure returns (uint256, uint256) {
        if (uint8(b[p]) != tag) revert InvalidPeerProof();
        uint256 first = uint8(b[p + 1]);
        uint256 len;
        if (first < 0x80) {
            len = first;
            p += 2;
        } else if (first == 0x81) {
            len = uint8(b[p + 2]);
            p += 3;
        } else if (first == 0x82) {
            len = (uint256(uint8(b[p + 2])) << 8) | uint8(b[p + 3]);
            p += 4;
        } else {
            revert InvalidPeerProof();
        }
        if (p + len > b.length) revert InvalidPeerProof();
        return (p, len);
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256: signature^e mod n (modexp precompile, 0x05) must equal
    /// 0x00 01 FF..FF 00 || DigestInfo(sha256) || digest.
    function _rsaVerify(bytes32 digest, bytes calldata signature, bytes calldata exponent, bytes calldata modulus)
        private
        view
        returns (bool)
    {
        uint256 k = modulus.length;
        if (signature.length != k) return false;
        bytes memory input = abi.encodePacked(k, exponent.length, k, signature, exponent, modulus);
        (bool ok, bytes memory result) = address(0x05).staticcall(input);
        if (!ok || result.length != k) return false;
        bytes memory expected = new bytes(k); // k is a multiple of 32 (checked in _rsaPublicKey)
        assembly {
            let start := add(expected, 32)
            let end := add(start, k)
            for { let q := start } lt(q, end) { q := add(q, 32) } { mstore(q, not(0)) }
            mstore(start, or(shl(240, 1), shr(16, not(0)))) // 00 01 FF..
            // FF.. 00 30 31 30 0d 06 09 60 86 48 01 65 03 04 02 01 05 00 04 20 (DigestInfo prefix)
            mstore(sub(end, 64), or(shl(160, not(0)), 0x003031300d060960864801650304020105000420))
            mstore(sub(end, 32), digest)
        }
        return keccak256(result) == keccak256(expected);
    }

    /// The peer ID's key, if the caller's wallet registered it.
    function _ownedPeer(string calldata peerId) private view returns (bytes32 key) {
        key = keccak256(bytes(peerId));
        if (_peerEoa[key] != msg.sender) revert InvalidVoterPeerId();
    }

    /// Add one to `key`'s count, keeping `r.order` sorted (O(1)).
    function _bump(Ranking storage r, bytes32 key) private {
        uint256 posPlusOne = r.positionPlusOne[key];
        uint256 pos;
        uint256 c;
        if (posPlusOne == 0) {
            // New members enter at the end with count 0 (the lowest group).
            r.order.push(key);
            pos = r.order.length - 1;
            r.positionPlusOne[key] = pos + 1;
            if (r.groupSize[0] == 0) r.groupStart[0] = pos;
            r.groupSize[0] += 1;
        } else {
            pos = posPlusOne - 1;
            c = r.count[key];
        }
        uint256 first = r.groupStart[c];
        if (first != pos) {
            bytes32 other = r.order[first];
            r.order[first] = key;
            r.order[pos] = other;
            r.positionPlusOne[key] = first + 1;
            r.positionPlusOne[other] = pos + 1;
        }
        r.groupSize[c] -= 1;
        if (r.groupSize[c] != 0) r.groupStart[c] = first + 1;
        uint256 next = c + 1;
        r.count[key] = next;
        if (r.groupSize[next] == 0) r.groupStart[next] = first;
        r.groupSize[next] += 1;
    }

    function _page(Ranking storage r, uint256 start, uint256 end)
        private
        view
        returns (string[] memory ids, uint256[] memory counts)
    {
        uint256 n = r.order.length;
        if (end > n) end = n;
        if (start >= end) return (new string[](0), new uint256[](0));
        uint256 size = end - start;
        ids = new string[](size);
        counts = new uint256[](size);
        for (uint256 i = 0; i < size; i++) {
            bytes32 key = r.order[start + i];
            ids[i] = _peerName[key];
            counts[i] = r.count[key];
        }
    }
}
